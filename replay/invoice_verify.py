"""`replay verify`: every issued invoice recomputed from its events with the engine as it is
now, and compared with what was recorded. The gate for every pricing change.

Each invoice is recomputed on its own: the workspace's state just before the run that decided
it is folded from the recorded facts, the run is decided again on a copy (replay/redecide.py)
with the catalog the facts record (version and content hash), and the invoice it issues is
compared field by field, line by line: id, purpose, currency, each line's kind, description,
amount, quantity, period and formula, then subtotal, credit applied and amount due. A
difference in one invoice therefore never hides behind, or spills into, another.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from domain.errors import each_workspace, failure
from domain.ledger import Ledger
from domain.subscription import Subscription
from replay.history import Catalogs, Outcomes, Run, check_known, deciding_runs, runs
from replay.redecide import Replayer

LINE_FIELDS = ("kind", "description", "amount", "quantity", "period_start", "period_end", "formula")
TOTAL_FIELDS = ("purpose", "currency", "subtotal", "credit_applied", "amount_due")


@dataclass
class Finding:
    """One recorded invoice that the engine now computes otherwise (or cannot compute)."""

    workspace: str
    invoice_id: str
    versions: tuple[int, int]
    problems: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "invoice_id": self.invoice_id,
                "decided_by_versions": list(self.versions), "problems": self.problems}


def compare(recorded: Any, recomputed: Any) -> list[dict[str, Any]]:
    """Every field of an invoice that differs, with both values."""
    problems = [{"field": name, "recorded": getattr(recorded, name), "recomputed": getattr(recomputed, name)}
                for name in ("invoice_id", *TOTAL_FIELDS) if getattr(recorded, name) != getattr(recomputed, name)]
    old, new = recorded.lines, recomputed.lines
    if len(old) != len(new):
        problems.append({"field": "lines", "recorded": len(old), "recomputed": len(new)})
    for n, (a, b) in enumerate(zip(old, new), 1):
        problems += [{"field": f"line {n} {name}", "recorded": a.get(name), "recomputed": b.get(name)}
                     for name in LINE_FIELDS if a.get(name) != b.get(name)]
    return problems


def verify_workspace(ledger: Ledger, workspace: str, catalogs: Catalogs) -> tuple[int, list[Finding]]:
    """(invoices checked, findings) for one workspace."""
    history = runs(ledger.workspace_events(workspace))
    replayer = Replayer(Outcomes.of(history), lambda run: catalogs.of(run.first))
    to_check = deciding_runs(history)
    checked, findings = 0, []
    state: Subscription | None = None
    for run in history:
        recorded = to_check.get(run.index, [])
        if recorded:
            checked += len(recorded)
            findings += _check_run(replayer, state, run, recorded, workspace)
        for event in run.events:
            state = event.mutate(state)
    return checked, findings


def _check_run(replayer: Replayer, state: Subscription | None, run: Run, recorded: list[Any],
               workspace: str) -> Iterator[Finding]:
    trial = copy.deepcopy(state)
    if trial is not None:
        trial._pending_events = []  # noqa: SLF001 (a fresh copy records only what this run decides)
    try:
        _, replayed = replayer.run(trial, run)
    except Exception as e:  # noqa: BLE001 (an engine that cannot decide the run is itself a finding)
        for invoice in recorded:
            yield Finding(workspace, invoice.invoice_id, run.versions,
                          [{"field": "computation", "recorded": "issued", "recomputed": f"{type(e).__name__}: {e}"}])
        return
    decided = {i.invoice_id: i for i in replayed.invoices()}
    unmatched = [i for i in replayed.invoices() if i.invoice_id not in {r.invoice_id for r in recorded}]
    for invoice in recorded:
        again = decided.get(invoice.invoice_id) or (unmatched.pop(0) if unmatched else None)
        if again is None:
            why = "; ".join(e.message for e in replayed.refused) or "no invoice decided"
            problems = [{"field": "invoice", "recorded": "issued", "recomputed": f"not issued ({why})"}]
        else:
            problems = compare(invoice, again)
        if problems:
            yield Finding(workspace, invoice.invoice_id, run.versions, problems)


def verify_invoices(ledger: Ledger, workspace: str | None = None) -> dict[str, Any]:
    """The report: `ok`, how many invoices of how many workspaces were checked, the findings, and
    each workspace whose history could not be read (`unverified`: a broken event chain) while
    the others were checked."""
    catalogs = Catalogs(ledger)
    if workspace is not None:
        check_known(ledger, workspace)
    chosen = [workspace] if workspace else ledger.workspaces()
    def verified(ws: str) -> tuple[int, list[Finding]]:
        with ledger.reading_history(ws):  # an event changed by hand to read as another class: named as such
            return verify_workspace(ledger, ws, catalogs)

    done, failed = each_workspace(chosen, verified)
    findings = [f for _, found in done.values() for f in found]
    return {"ok": not findings and not failed, "workspaces": len(chosen),
            "invoices": sum(n for n, _ in done.values()), "differences": [f.as_dict() for f in findings],
            "unverified": {ws: failure(e) for ws, e in failed.items()}}
