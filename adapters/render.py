"""Human-readable rendering of step outputs for the CLI and the demo (JSON stays the contract;
this is only for people reading a terminal)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from domain.payments import ending
from domain.text import one_line  # a reason recorded before control characters were refused


def console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def print_table(table: Table) -> None:
    """A table at its natural width when the terminal is narrower, or the output a pipe (read as
    80 columns): rich would cut its cells, a workspace id to "ac…" or a whole column away."""
    out = console()
    natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if natural > out.width:
        out = Console(highlight=False, soft_wrap=True, width=natural)
    out.print(table)


def invoice_lines(invoice: dict[str, Any], due: str = "due now") -> list[str]:
    """Every line with the arithmetic that produced it (R26: no mystery charges), one formula
    per line so a narrow terminal never splits it."""
    amounts = [line["amount"] for line in invoice["lines"]] + [invoice["subtotal"], invoice["amount_due"]]
    width = max(len(a) for a in amounts) + 1
    out = [f"  invoice {invoice['id']} ({invoice['purpose']})"]
    for line in invoice["lines"]:
        out.append(f"    {line['amount']:>{width}}  {line['kind']:<18} {line['description']}")
        out.append(f"    {'':>{width}}  = {line['formula']}")
    out.append(f"    {'-' * width}")
    out.append(f"    {invoice['subtotal']:>{width}}  subtotal")
    if Decimal(invoice["credit_applied"]):
        out.append(f"    {'-' + invoice['credit_applied']:>{width}}  billing credit applied")
    out.append(f"    {invoice['amount_due']:>{width}}  {due} ({invoice['currency']})")
    if Decimal(invoice.get("credit_issued") or 0):  # R27: a credit beyond the bill
        out.append(f"    {invoice['credit_issued']:>{width}}  beyond the bill, kept as billing credit")
    if Decimal(invoice.get("credit_forfeited") or 0):
        out.append(f"    {invoice['credit_forfeited']:>{width}}  beyond the bill, forfeited (credit_overflow = forfeit)")
    return out


def state_line(state: dict[str, Any]) -> str:
    """The state a person checks after a change, on one line."""
    if state.get("status") == "none":
        return "no subscription"
    plan = f"{state['plan']}" + (f" {state['tier']:,} ops" if state.get("tier") else "") \
        + (f" ({state['interval']}ly)" if state.get("interval") else "")
    parts = [plan, state["status"]] if state.get("plan") else [state["status"]]
    if state.get("seats") is not None:
        parts.append(f"{state['seats']} seats, {state.get('members', 0)} members")
    if state.get("over_seat"):
        parts.append("OVER SEAT LIMIT")
    if state.get("period_end"):
        parts.append(f"period {state['period_start'][:10]} -> {state['period_end'][:10]}")
    if state.get("scheduled_change"):
        change = state["scheduled_change"]
        to = f" to {change['plan']}" if change.get("plan") else ""
        parts.append(f"scheduled {change['kind']}{to} at {change['effective_at'][:10]}")
    parts.append(f"credit {state['billing_credit']}")
    if state.get("ai_credits"):
        parts.append(f"{state['ai_credits']:,} AI credits")
    if state.get("operations_remaining"):
        parts.append(f"{state['operations_remaining']:,} operations left")
    if state.get("storage_addon"):
        parts.append(f"add-on {state['storage_addon']}")
    if state.get("contract"):
        parts.append(f"{state['contract']} contract")
    if state.get("open_invoice"):
        parts.append(f"OPEN INVOICE {state['open_invoice']}")
    return " | ".join(parts)


def state_table(state: dict[str, Any]) -> Table:
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in state.items():
        table.add_row(key, _plain(value))
    return table


def _plain(value: Any) -> str:
    """A read model's value for a person: no Python reprs of dicts, lists or None."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items() if v is not None) or "-"
    if isinstance(value, list):
        return ("; " if any(isinstance(v, dict) for v in value) else ", ").join(map(_plain, value)) or "-"
    return "-" if value is None else str(value)


def print_outcome(out: dict[str, Any], con: Console) -> None:
    """A command's result: what was recorded, the invoice with its formulas, the state after."""
    mark = "[green]ok[/]" if out["ok"] else f"[red]refused ({out['error']['code']})[/]"
    con.print(f"{mark} {out['do']} {out['workspace'] or ''} at {out['at']}", markup=True)
    if not out["ok"]:
        con.print(f"  {out['error']['message']}", markup=False)
    if out["due_events"]:
        con.print(f"  fell due first: {', '.join(out['due_events'])}", markup=False)
    if out["events"]:
        verb = "would record" if out["do"] == "preview" else "recorded"
        con.print(f"  {verb}: {', '.join(out['events'])}" + (" (replayed)" if out.get("replayed") else ""),
                  markup=False)
    if out["invoice"]:
        for text in invoice_lines(out["invoice"]):
            con.print(text, markup=False)
    if out["state"]:
        con.print(f"  now: {state_line(out['state'])}", markup=False)
    if out.get("outcome"):
        con.print(f"  would be: {state_line(out['outcome'])}", markup=False)
        con.print(f"  {renewal_line(out['outcome']['next_renewal'])}", markup=False)
        if out["outcome"].get("final_invoice"):
            con.print(f"  {final_line(out['outcome']['final_invoice'])}", markup=False)


def renewal_line(renewal: dict[str, Any] | None) -> str:
    """The renewal a previewed change leads to: when, on what, and what it will charge (R25)."""
    if renewal is None:
        return "next renewal: none (nothing will be billed at the period end)"
    what = renewal["plan"] + (f" {renewal['tier']:,} ops" if renewal.get("tier") else "") \
        + (f" ({renewal['interval']}ly)" if renewal.get("interval") else "")
    if renewal.get("seats") is not None:
        what += f", {renewal['seats']} seats"
    if renewal.get("addons"):
        what += f", add-ons {', '.join(renewal['addons'])}"
    return f"next renewal: {renewal['at'][:10]} {what}: {renewal['amount_due']} {renewal['currency']} due"


def final_line(final: dict[str, Any]) -> str:
    """The final invoice a previewed change leads to: what is still owed when billing ends (R19)."""
    return f"final invoice: {final['at'][:10]}: {final['amount_due']} {final['currency']} due"


def void_ending(invoice: dict[str, Any]) -> str:
    """How the charge of a void invoice ended: declined by the card, or canceled (decline code
    `canceled`: abandoned while it waited for the customer's 3-D Secure, replay/explain.py)."""
    last = invoice["payments"][-1] if invoice["payments"] else {}
    return ending(last.get("decline_code"), "declined")


def invoices_text(data: dict[str, Any]) -> list[str]:
    """A workspace's invoices: each line with its arithmetic, then status and payments; then the
    upcoming one (the renewal, or a final invoice) the same way."""
    out = [f"invoices of {data['workspace']}"]
    if not data["invoices"]:
        out.append("  no invoices yet")
    for invoice in data["invoices"]:
        out += invoice_lines({**invoice, "id": invoice["invoice_id"]}, due="amount due")
        paid = f", paid {invoice['amount_paid']} at {invoice['paid_at']}" if invoice.get("paid_at") else ""
        void = f" (its charge was {void_ending(invoice)}: nothing bought, nothing owed, R12)" \
            if invoice["status"] == "void" else ""
        when = "requested" if invoice["status"] == "void" else "issued"  # a void invoice was never issued (R12)
        out.append(f"    status {invoice['status']}{void}, {when} {invoice['issued_at']}{paid}")
        for payment in invoice["payments"]:
            how = (f"charge {payment['charge_id']} ({payment['payment_method']})" if payment["outcome"] == "succeeded"
                   else f"{payment['decline_code']}: {payment['message']}")
            out.append(f"    payment {payment['outcome']} at {payment['at']}: {payment['amount']} {how}")
    upcoming = data.get("upcoming")
    if upcoming:
        final = upcoming.get("purpose") == "final"
        out.append(f"upcoming {'final invoice, as billing ends' if final else 'renewal'}, due {upcoming['due_at']}")
        out += invoice_lines({**upcoming, "id": ""},
                             due="due at the period end" if final else "due at renewal")[1:]
    return out


def status_table(status: list[dict[str, Any]]) -> Table:
    table = Table("read model", "version", "tables", "position", "head", "lag", show_edge=False, pad_edge=False)
    for row in status:
        table.add_row(row["projection"], str(row["version"]), row["tables"], str(row["position"]), str(row["head"]),
                      str(row["lag"]))
    return table


def workspaces_table(states: list[dict[str, Any]]) -> Table:
    table = Table("workspace", "plan", "status", "seats", "period end", "credit", "open invoice", show_edge=False,
                  pad_edge=False)
    for column in table.columns[1:]:
        column.no_wrap = True
    for state in states:
        plan = (state.get("plan") or "-") + (f"/{state['interval']}" if state.get("interval") else "")
        table.add_row(state.get("workspace") or "-", plan, state["status"],
                      "-" if state.get("seats") is None else str(state["seats"]), (state.get("period_end") or "-")[:10],
                      state["billing_credit"], state.get("open_invoice") or "-")
    return table


def audit_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each audit row as two lines: when, what and who; then its summary (any terminal width)."""
    out = []
    for row in rows:
        at = row["occurred_at"][:19].replace("T", " ")
        out.append(f"#{row['position']}  {at} UTC  {row['event_type']}  by {row['actor_id']} ({row['actor_role']}) "
                   f"via {row['channel']}" + (f", because {one_line(row['reason'])}" if row.get("reason") else ""))
        out.append(f"    {one_line(row['summary'])}")
    return out


def books_tables(books: dict[str, Any], accounts: dict[str, tuple[str, str]]) -> list[Table]:
    """One trial balance per currency: the signed balance, and what it reads as in words."""
    tables = []
    for currency, found in books["currencies"].items():
        table = Table("account", "balance", "reads as", "holds", title=currency, title_justify="left",
                      show_edge=False, pad_edge=False)
        table.columns[1].justify = "right"
        table.columns[-1].overflow = "fold"
        for account, balance in found["accounts"].items():
            side, meaning = accounts.get(account, ("", ""))
            amount = Decimal(balance)
            reads = "nil" if not amount else f"{'debit' if amount > 0 else 'credit'} {abs(amount)}"
            unusual = " (unusual side)" if amount and side and reads.split()[0] != side else ""
            table.add_row(account, balance, reads + unusual, meaning)
        table.add_row("total", found["total"], "balanced" if not Decimal(found["total"]) else "UNBALANCED", "",
                      style="bold")
        tables.append(table)
    return tables


def verify_lines(result: dict[str, Any]) -> list[str]:
    """`audit verify` for a person: the verdict, then each check on a line, what it covered or
    where it failed (the JSON result, with --json, carries the same and more)."""
    out = [f"audit verify: {'ok' if result['ok'] else 'FAILED'}"]
    for name, check in result["checks"].items():
        out.append(f"  {name:<16} {'ok' if check['ok'] else 'FAILED':<7}{_covered(name, check)}")
    return out


def _covered(name: str, check: dict[str, Any]) -> str:
    if not check["ok"]:
        where = [f"workspace {check['workspace']}" if check.get("workspace") else check.get("stream")]
        where += [f"version {check['version']}" if check.get("version") is not None else None,
                  f"position {check['position']}" if check.get("position") is not None else None]
        where.append(check.get("event_type"))
        place = ", ".join(w for w in where if w)
        detail = check.get("detail")
        return f"{check.get('problem')}{f' at {place}' if place else ''}{f': {detail}' if detail else ''}"
    if name == "event_chain":
        since = check.get("chained_since") or {}
        linked = since.get("events_linked_as_found") or 0
        return (f"{_count(check['events'], 'event')} in {_count(check['streams'], 'stream')} match their links"
                + (f"; {_count(linked, 'event')} linked as found at {since.get('chained_at')}, up to position "
                   f"{since.get('up_to_position')}" if linked else ""))
    if name == "snapshots":
        return f"{_count(check['snapshots'], 'snapshot')} equal the state their events replay to"
    if name == "audit_trail":
        return f"{_count(check['rows'], 'row')} in {_count(check['workspaces'], 'workspace')}, their hash chain intact"
    return f"{_count(check['rows'], 'row')}, one per workspace event, agree with the events"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
