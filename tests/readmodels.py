"""Helpers for the read-model tests: snapshots of every read model and the checks that
tie them to the aggregate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from domain.entitlements import entitlements
from domain.money import ZERO
from domain.subscription import Subscription
from projections.journal import Journal, trial_balance, unbalanced_entries
from projections.entitlements import read_entitlements
from projections.plan_state import read_plan_state
from projections.runner import ALL
from projections.views import plan_state


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every live read model, in primary-key order."""
    out = {}
    with engine.connect() as conn:
        for model in ALL:
            for name, table in model.stable().items():
                keys = [c for c in table.primary_key.columns]
                out[name] = [dict(r) for r in conn.execute(select(table).order_by(*keys)).mappings()]
    return out


def check_against_ledger(ledger: Any, engine: Engine) -> None:
    """plan_state and entitlements equal the aggregate's own; the journal balances and agrees with
    the aggregate's open invoices and billing credit; one audit row per event."""
    with engine.connect() as conn:
        totals = trial_balance(conn)
        assert sum(totals.values(), ZERO) == 0, totals
        journal = Journal.stable()["journal"]
        assert unbalanced_entries(conn.execute(select(journal.c.position, journal.c.amount))) == []
        for ws in ledger.workspaces():
            sub = ledger.get(ws)
            assert read_plan_state(conn, ws) == plan_state(sub, ledger.catalog_for(sub)), ws
            assert read_entitlements(conn, ws) == entitlements(sub, ledger.catalog_for(sub)).as_dict(), ws
            balances = trial_balance(conn, ws)
            open_due = sum((i["amount_due"] for i in sub.invoices.values() if i["status"] == "open"), ZERO)
            assert balances.get("receivable", ZERO) == open_due, (ws, balances, sub.invoices)
            assert -balances.get("billing_credit", ZERO) == sub.billing_credit, (ws, balances)
            held = -balances.get("ai_credit_liability", ZERO)
            assert held >= 0 and (held == 0 or sub.ai_purchased > 0), (ws, held, sub.ai_purchased)


def event_counts(ledger: Any) -> dict[str, int]:
    """How many Subscription events, and invoices, the ledger recorded: issued, and void (a declined
    purchase's, R12)."""
    n_events = n_invoices = n_void = 0
    for ws in ledger.workspaces():
        for e in ledger.workspace_events(ws):
            n_events += 1
            n_invoices += isinstance(e, Subscription.InvoiceIssued)
            n_void += isinstance(e, Subscription.ChargeDeclined) and bool(e.invoice_id)
    return {"events": n_events, "invoices": n_invoices, "void": n_void}
