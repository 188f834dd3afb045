"""`replay what-if`: the recorded history re-priced under another catalog or policy, in
memory, and what would differ, invoice by invoice and in total. Nothing is written.

Each workspace's recorded runs are decided again in order (replay/redecide.py) on a copy of
the workspace that evolves under the other pricing: the commands its facts record, what fell
due when it fell due, and every charge settled with the outcome the provider gave. A price
change therefore carries through: a credit for unused time credits what would have been
paid, a billing credit left over is spent by the next invoice. With `start`, the copy is the
recorded workspace up to then, and the other pricing applies from then on; with `end`, runs
from then on are left out.

Invoices are paired by the run that decided them and their order in it (not by id: an
invoice that would appear or vanish shifts later ids). Limits (docs/replay.md): commands are
rebuilt from their facts, so a command refused when recorded (it recorded nothing) is never
tried; one the other pricing refuses is reported and skipped; a charge is settled with its
recorded outcome whatever its new amount; the catalog applies to workspaces billed on a
catalog of the same id unless the workspace is named.
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from pydantic import ValidationError

from domain.catalog import Catalog, Policy
from domain.catalog_files import bounded, unprintable_texts
from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.money import fmt
from domain.plain_errors import sentences
from domain.subscription import Subscription
from domain.subscription.billing_events import credit_beyond
from projections.store import iso
from replay.history import Catalogs, Outcomes, Run, check_chain, deciding_run, first_runs, runs
from replay.redecide import Replayer, commands

ZERO = Decimal(0)
MONEY = ("subtotal", "credit_applied", "amount_due", "credit_issued", "credit_forfeited")


def parse_policy(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` overrides of the catalog policy; values are JSON where they parse (true,
    14, {"month": 60}), else text (second)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise LedgerError("invalid_request", f"--policy: {pair!r} is not key=value")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
        except (ValueError, RecursionError):  # a number of thousands of digits, arrays nested too deeply
            raise LedgerError("invalid_request", f"--policy: the value of {key.strip()[:40]!r} is not one a "
                              "policy can take") from None
    known = set(Policy.model_fields)
    unknown = sorted(set(out) - known)
    if unknown:
        raise LedgerError("invalid_request",
                          f"--policy: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return out


def with_policy(catalog: Catalog, policy: dict[str, Any]) -> Catalog:
    """The catalog with its policy overridden, under a version of its own (its content differs)."""
    if not policy:
        return catalog
    document = catalog.model_dump(mode="json")
    document["policy"] |= policy
    document["version"] = f"{catalog.version}+what-if"[:40]
    try:
        changed = Catalog.model_validate(document)
    except ValidationError as e:
        raise LedgerError("invalid_request", f"--policy: {'; '.join(sentences(e.errors()))}") from None
    found = list(unprintable_texts(policy)) + bounded(changed)  # what a catalog file may set, a what-if may set
    if found:
        raise LedgerError("invalid_request", f"--policy: {'; '.join(found)}")
    return changed


@dataclass
class Pricing:
    """The other pricing: a catalog (None: the one each run recorded), policy overrides, and
    the window [start, end) of runs it re-prices."""

    catalog: Catalog | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise LedgerError("invalid_request", f"the window to re-price starts ({iso(self.start)}) at or after it "
                              f"ends ({iso(self.end)}): from must be before to")

    def catalog_for(self, recorded: Catalogs) -> Any:
        cache: dict[str, Catalog] = {}

        def choose(run: Run) -> Catalog:
            base = self.catalog or recorded.of(run.first)
            if base.content_hash not in cache:
                cache[base.content_hash] = with_policy(base, self.policy)
            return cache[base.content_hash]
        return choose


def summary_of(invoice: Any, events: list[Any]) -> dict[str, Any]:
    cur = invoice.currency
    issued, forfeited = credit_beyond(invoice, events)
    return {"invoice_id": invoice.invoice_id, "issued_at": iso(invoice.timestamp), "purpose": invoice.purpose,
            "currency": cur, "subtotal": invoice.subtotal, "credit_applied": invoice.credit_applied,
            "amount_due": invoice.amount_due, "credit_issued": issued, "credit_forfeited": forfeited,
            "lines": [{"kind": line["kind"], "description": line["description"], "amount": line["amount"],
                       "quantity": line["quantity"], "formula": line["formula"]} for line in invoice.lines]}


def diff(workspace: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """One invoice compared: status same, changed, new (only under the other pricing) or gone."""
    base = old or new
    assert base is not None
    cur = base["currency"]
    out: dict[str, Any] = {"workspace": workspace, "invoice_id": old["invoice_id"] if old else None,
                           "issued_at": base["issued_at"],
                           "purpose": base["purpose"], "currency": cur,
                           "what_if_invoice_id": new["invoice_id"] if new else None}
    for name in MONEY:
        a, b = (old or {}).get(name, ZERO), (new or {}).get(name, ZERO)
        out[name] = {"recorded": fmt(a, cur) if old else None, "what_if": fmt(b, cur) if new else None,
                     "delta": fmt(b - a, cur)}
    lines = []
    old_lines, new_lines = (old or {}).get("lines", []), (new or {}).get("lines", [])
    for a, b in paired(old_lines, new_lines, "kind"):
        if a and b and (a["amount"], a["quantity"]) == (b["amount"], b["quantity"]):
            continue
        n = next(i for i, line in enumerate(old_lines if a else new_lines) if line is (a or b))  # not ==: twins
        lines.append({"n": n + 1, "kind": (a or b)["kind"], "description": (a or b)["description"],
                      "recorded": fmt(a["amount"], cur) if a else None, "what_if": fmt(b["amount"], cur) if b else None,
                      "delta": fmt((b["amount"] if b else ZERO) - (a["amount"] if a else ZERO), cur),
                      "recorded_formula": a["formula"] if a else None, "what_if_formula": b["formula"] if b else None})
    out["lines"] = lines
    changed = bool(lines) or any(out[name]["delta"] != fmt(ZERO, cur) for name in MONEY)
    out["status"] = "gone" if new is None else "new" if old is None else "changed" if changed else "same"
    return out


def paired(old: list[dict[str, Any]], new: list[dict[str, Any]], by: str) -> list[tuple[Any, Any]]:
    """Recorded and what-if items paired by `by`, then in order. Invoices of one run by purpose: a
    renewal that now falls due before a command pairs with no recorded invoice rather than with
    the command's. An invoice's lines by kind: a credit line the other pricing drops leaves its
    charge paired with the recorded charge, not with the credit."""
    out: list[tuple[Any, Any]] = []
    for value in dict.fromkeys([i[by] for i in old + new]):
        a = [i for i in old if i[by] == value]
        b = [i for i in new if i[by] == value]
        out += [(a[n] if n < len(a) else None, b[n] if n < len(b) else None) for n in range(max(len(a), len(b)))]
    return out


def workspace_what_if(ledger: Ledger, workspace: str, pricing: Pricing, recorded: Catalogs) -> dict[str, Any]:
    """Every invoice of one workspace compared, its refusals, and its summary."""
    check_chain(ledger, workspace)
    history = runs(ledger.workspace_events(workspace))
    replayer = Replayer(Outcomes.of(history), pricing.catalog_for(recorded))
    first = first_runs(history)
    old: dict[int, list[dict[str, Any]]] = {}
    new: dict[int, list[dict[str, Any]]] = {}
    refused: list[dict[str, Any]] = []
    state: Subscription | None = None
    sandbox: Subscription | None = None
    started = False
    for run in history:
        if pricing.end is not None and run.at >= pricing.end:
            break
        if pricing.start is not None and run.at < pricing.start:
            for event in run.events:
                state = event.mutate(state)
            continue
        if not started:
            sandbox, started = copy.deepcopy(state), True
        for invoice in run.invoices():
            old.setdefault(deciding_run(invoice, run.index, first), []).append(summary_of(invoice, run.events))
        sandbox, replayed = replayer.run(sandbox, run)
        for invoice in (e for e in replayed.events if isinstance(e, Subscription.InvoiceIssued)):
            new.setdefault(deciding_run(invoice, run.index, first), []).append(summary_of(invoice, replayed.events))
        refused += [{"versions": list(run.versions), "at": iso(run.at), "command": [c.name for c in commands(run)],
                     "code": e.code, "message": e.message} for e in replayed.refused]
    invoices = []
    for index in sorted(set(old) | set(new)):
        for a, b in paired(old.get(index, []), new.get(index, []), "purpose"):
            invoices.append(diff(workspace, a, b))
    return {"workspace": workspace, "invoices": invoices, "refused": refused,
            "summary": summarise(invoices)}


def summarise(invoices: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {status: sum(1 for i in invoices if i["status"] == status) for status in ("same", "changed", "new", "gone")}
    totals = {}
    for name in MONEY:
        old = sum((Decimal(i[name]["recorded"]) for i in invoices if i[name]["recorded"] is not None), ZERO)
        new = sum((Decimal(i[name]["what_if"]) for i in invoices if i[name]["what_if"] is not None), ZERO)
        totals[name] = {"recorded": str(old), "what_if": str(new), "delta": str(new - old)}
    return {"invoices": len(invoices), **counts, "differences": len(invoices) - counts["same"], "totals": totals}


def what_if(ledger: Ledger, pricing: Pricing, workspaces: list[str] | None = None) -> dict[str, Any]:
    """The report: per workspace its invoices, refusals and summary (skipped when the catalog
    is for another catalog id and the workspace was not named), and the totals."""
    recorded = Catalogs(ledger)
    named = workspaces is not None
    out: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for ws in workspaces if named else ledger.workspaces():
        events = ledger.workspace_events(check_workspace_id(ws))
        if not events:
            raise LedgerError("not_found", f"{ws}: no such workspace")
        billed_on = events[0].catalog_id
        if pricing.catalog is not None and not named and billed_on != pricing.catalog.id:
            skipped.append({"workspace": ws, "reason": f"billed on catalog {billed_on}, not {pricing.catalog.id}"})
            continue
        billed_in = recorded.of(events[0]).currency
        if pricing.catalog is not None and billed_in != pricing.catalog.currency:
            reason = (f"billed in {billed_in}, and catalog {pricing.catalog.id} prices in {pricing.catalog.currency}: "
                      "a what-if compares amounts in one currency")
            if named:
                raise LedgerError("invalid_request", f"{ws}: {reason}")
            skipped.append({"workspace": ws, "reason": reason})
            continue
        try:
            out.append(workspace_what_if(ledger, ws, pricing, recorded))
        except LedgerError as e:  # a history broken by hand (event_chain_broken): the others are compared
            if named or e.code != "event_chain_broken":
                raise
            skipped.append({"workspace": ws, "reason": f"its history cannot be read: {e.message} [{e.code}]"})
    every = [i for w in out for i in w["invoices"]]
    return {"catalog": f"{pricing.catalog.id}@{pricing.catalog.version}" if pricing.catalog else "as recorded",
            "policy": pricing.policy, "from": iso(pricing.start), "to": iso(pricing.end),
            "workspaces": out, "skipped": skipped, "summary": summarise(every)}


CSV_FIELDS = ["workspace", "invoice_id", "what_if_invoice_id", "issued_at", "purpose", "status", "currency",
              *[f"{name}_{side}" for name in MONEY for side in ("recorded", "what_if", "delta")], "lines_changed"]


def write_csv(out: IO[str], report: dict[str, Any]) -> int:
    """One row per invoice compared (unchanged ones too, so totals can be summed)."""
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    n = 0
    for ws in report["workspaces"]:
        for i in ws["invoices"]:
            row = {k: i[k] for k in ("workspace", "invoice_id", "what_if_invoice_id", "issued_at", "purpose", "status",
                                     "currency")}
            for name in MONEY:
                row |= {f"{name}_{side}": i[name][side] for side in ("recorded", "what_if", "delta")}
            row["lines_changed"] = "; ".join(f"{line['n']} {line['kind']} {line['recorded']} -> {line['what_if']}"
                                             for line in i["lines"])
            writer.writerow(row)
            n += 1
    return n
