"""Human-readable rendering of step outputs for the CLI and the demo (JSON stays the contract;
this is only for people reading a terminal)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table


def console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def invoice_lines(invoice: dict[str, Any]) -> list[str]:
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
    out.append(f"    {invoice['amount_due']:>{width}}  due now ({invoice['currency']})")
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
        parts.append(f"scheduled {change['kind']} to {change.get('plan')} at {change['effective_at'][:10]}")
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
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key, "-" if value is None else str(value))
    return table


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
