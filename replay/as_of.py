"""`replay as-of`: a workspace's full state at an instant or a version, from its events only.

The workspace's facts are folded from the first, with the aggregate's own `apply` (no
snapshot, no read model), up to the cut:

- `at`: the last fact stamped at or before the instant (facts of one command share their
  instant, so all of them or none);
- `version`: exactly that many facts;
- `recorded_before`: only what the ledger had recorded by then. The store keeps no separate
  recording time: a fact cannot have been recorded before the facts that precede it in the
  stream, so the facts kept are the longest prefix whose timestamps are all at or before it.
  A scheduler fact is stamped with the instant it fell due, which may precede its recording.

What the period end would bill (the renewal, or a final invoice) is forecast from that state with
the catalog recorded then, as the upcoming_invoice read model forecast it
(projections/upcoming_invoice.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.money import fmt
from domain.subscription import Subscription
from projections.readmodel import event_ref
from projections.store import iso
from projections.upcoming_invoice import period_end_invoice
from projections.views import invoice_view, plan_state
from replay.history import Catalogs, check_chain


@dataclass
class AsOf:
    workspace: str
    sub: Subscription | None
    events: list[Any]
    """The facts folded, oldest first."""


def cut(events: list[Any], *, at: datetime | None = None, version: int | None = None,
        recorded_before: datetime | None = None) -> list[Any]:
    """The facts an as-of question keeps (see the module docstring)."""
    if recorded_before is not None:
        kept = []
        for event in events:
            if event.timestamp > recorded_before:
                break
            kept.append(event)
        events = kept
    if version is not None:
        if version < 0:
            raise LedgerError("invalid_request", "--version: 0 or more")
        events = [e for e in events if e.originator_version <= version]
    if at is not None:
        last = max((e.originator_version for e in events if e.timestamp <= at), default=0)
        events = [e for e in events if e.originator_version <= last]
    return events


def as_of(ledger: Ledger, workspace: str, *, at: datetime | None = None, version: int | None = None,
          recorded_before: datetime | None = None) -> AsOf:
    events = ledger.workspace_events(check_workspace_id(workspace))
    if not events:
        raise LedgerError("not_found", f"{workspace}: no such workspace")
    check_chain(ledger, workspace)
    if version is not None and version > events[-1].originator_version:
        raise LedgerError("invalid_request", f"--version: {workspace} has {events[-1].originator_version} versions")
    kept = cut(events, at=at, version=version, recorded_before=recorded_before)
    sub = None
    for event in kept:
        sub = event.mutate(sub)
    return AsOf(workspace, sub, kept)


def invoices_then(sub: Subscription, events: list[Any]) -> dict[str, dict[str, Any]]:
    """Every invoice issued by then, in issue order: the open ones as the aggregate holds them, the
    paid ones (which the aggregate no longer keeps) from their facts: amount due, last attempt."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, Subscription.InvoiceIssued):
            out[e.invoice_id] = {"amount_due": e.amount_due, "status": "open" if e.amount_due > 0 else "paid",
                                 "attempts": 0}
        elif isinstance(e, Subscription.ChargeRequested) and e.invoice_id in out:
            out[e.invoice_id]["attempts"] = e.attempt
        elif isinstance(e, Subscription.PaymentSucceeded):
            out[e.invoice_id]["status"] = "paid"
        elif isinstance(e, Subscription.PaymentFailed):
            out[e.invoice_id]["status"] = "open"
    for invoice_id, held in sub.invoices.items():
        out[invoice_id] = dict(held)
    return out


def document(ledger: Ledger, found: AsOf) -> dict[str, Any]:
    """Everything a person asks of a past state: plan, seats, members, credits and balances,
    scheduled change, open invoices, pending charges, and the renewal as forecast then."""
    sub = found.sub
    if sub is None:
        return {"workspace": found.workspace, "version": 0, "last_event": None,
                "state": {"status": "none", "plan": None}, "note": "no facts recorded by then"}
    last = found.events[-1]
    catalog = Catalogs(ledger).of(last)
    cur = catalog.currency
    invoices = [{"invoice_id": i, "amount_due": fmt(inv["amount_due"], cur), "status": inv["status"],
                 "attempts": inv["attempts"]} for i, inv in invoices_then(sub, found.events).items()]
    forecast = period_end_invoice(sub, catalog)
    upcoming = None
    if forecast is not None:
        renewed, invoice = forecast
        upcoming = invoice_view(invoice) | {"due_at": iso(invoice.timestamp), "plan": renewed.plan,
                                            "interval": renewed.interval, "seats": renewed.seat_limit(catalog)}
    return {
        "workspace": found.workspace,
        "version": sub.version,
        "last_event": {"id": event_ref(found.workspace, last.originator_version), "type": type(last).__name__,
                       "at": iso(last.timestamp), "command_id": last.command_id},
        "catalog_version": last.catalog_version,
        "state": plan_state(sub, catalog),
        "balances": {
            "billing_credit": fmt(sub.billing_credit, cur),
            "ai_credits_granted": sub.ai_granted, "ai_credits_purchased": sub.ai_purchased,
            "operations": {"allotment": sub.ops_allotment, "extra": sub.ops_extra, "carried": sub.ops_carried,
                           "carried_until": iso(sub.ops_carried_until), "next_reset": iso(sub.ops_reset_at)},
        },
        "open_invoices": [i for i in invoices if i["status"] == "open"],
        "invoices": invoices,
        "pending_charges": [{"invoice_id": p["invoice_id"], "amount": fmt(p["amount"], cur), "purpose": p["purpose"],
                             "waiting_for": "customer (3-D Secure)" if p["action_required"] else "provider"}
                            for p in sub.pending_charges.values()],
        "payment_methods": list(sub.payment_methods),
        "upcoming_renewal": upcoming,
    }
