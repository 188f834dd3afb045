"""Read-side views of a workspace: the JSON shapes every adapter shows.

Amounts leave as strings (never floats), instants as ISO-8601 UTC. The scenario
runner and the CLI render through these functions, so they cannot disagree.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.catalog import Catalog
from domain.entitlements import granted
from domain.money import fmt
from domain.subscription import Subscription
from domain.subscription.billing_events import invoice_number
from projections.store import iso
from projections.upcoming_invoice import period_end_invoice


def plan_state(sub: Subscription | None, catalog: Catalog) -> dict[str, Any]:
    """The `state` object of the scenario contract (docs/scenarios.md)."""
    if sub is None:
        return {"plan": None, "tier": None, "interval": None, "seats": None, "status": "none",
                "period_start": None, "period_end": None, "scheduled_change": None,
                "billing_credit": fmt(Decimal(0), catalog.currency), "ai_credits": 0,
                "operations_remaining": 0, "open_invoice": None, "open_invoices": []}
    scheduled = None
    if sub.scheduled:
        scheduled = {
            "kind": sub.scheduled["kind"],
            "plan": sub.scheduled.get("plan"),
            "tier": sub.scheduled.get("tier"),
            "interval": sub.scheduled.get("interval"),
            "seats": sub.scheduled.get("seats"),
            "effective_at": iso(sub.scheduled["effective_at"]),
        }
    canceled = sub.status == "canceled"  # no plan, interval or seats any more: shown as such
    seat_limit = None if canceled else sub.seat_limit(catalog)
    storage_limit = sub.storage_limit(catalog)
    return {
        "workspace": sub.workspace_id,
        "plan": None if canceled else sub.plan,
        "tier": None if canceled else sub.tier,
        "interval": None if canceled else sub.interval,
        "seats": None if canceled else (sub.seats if sub.seats is not None else seat_limit),
        "members": sub.members,
        "over_seat": seat_limit is not None and sub.members > seat_limit,
        "status": sub.status,
        "period_start": None if canceled else iso(sub.period_start),
        "period_end": iso(sub.period_end),
        "scheduled_change": scheduled,
        "billing_credit": fmt(sub.billing_credit, catalog.currency),
        "ai_credits": sub.ai_granted + sub.ai_purchased,
        "ai_credits_granted": sub.ai_granted,
        "ai_credits_purchased": sub.ai_purchased,
        "operations_remaining": sub.operations_remaining,
        "open_invoice": sub.open_invoice,
        "open_invoices": [
            {"id": i, "amount_due": fmt(sub.invoices[i]["amount_due"], catalog.currency),
             "retry_at": iso(sub.invoices[i].get("retry_at"))}
            for i in sorted(sub.open_invoices(), key=invoice_number)],
        "storage_used_gb": str(sub.storage_used),
        "storage_limit_gb": storage_limit,
        "storage_read_only": sub.storage_used > storage_limit,
        "storage_addon": sub.storage_addon,
        "features": granted(sub, catalog),
        "contract": sub.contract,
        "payment_method": sub.default_payment_method,
        "catalog_version": sub.catalog_version,
        "version": sub.version,
    }


def outcome_view(sub: Subscription, catalog: Catalog) -> dict[str, Any]:
    """What a previewed change would leave (R25): the `state` document of the workspace as it
    would be (without `version`: nothing is recorded), its recurring add-ons, and what the period
    end would bill, priced on the forecast path the upcoming_invoice read model uses: the renewal
    that would follow, or the final invoice when billing would end there (R19)."""
    state = plan_state(sub, catalog)
    state.pop("version", None)
    state["addons"] = [sub.storage_addon] if sub.storage_addon else []
    state["next_renewal"] = state["final_invoice"] = None
    forecast = period_end_invoice(sub, catalog)
    if forecast is not None:
        renewed, invoice = forecast
        cur = invoice.currency
        billed = {"at": iso(invoice.timestamp), "subtotal": fmt(invoice.subtotal, cur),
                  "credit_applied": fmt(invoice.credit_applied, cur), "amount_due": fmt(invoice.amount_due, cur),
                  "currency": cur}
        if invoice.purpose == "final":
            state["final_invoice"] = billed
        else:
            state["next_renewal"] = {
                "at": billed["at"], "plan": renewed.plan, "tier": renewed.tier, "interval": renewed.interval,
                "seats": renewed.seat_limit(catalog),
                "addons": [renewed.storage_addon] if renewed.storage_addon else [],
            } | billed
    return state


def invoice_view(event: Subscription.InvoiceIssued) -> dict[str, Any]:
    """The `invoice` object of the scenario contract: lines with signed string amounts."""
    cur = event.currency
    return {
        "id": event.invoice_id,
        "purpose": event.purpose,
        "lines": [
            {
                "kind": line["kind"],
                "description": line["description"],
                "amount": fmt(line["amount"], cur),
                "quantity": line["quantity"],
                "period": {"start": iso(line["period_start"]), "end": iso(line["period_end"])},
                "formula": line["formula"],
            }
            for line in event.lines
        ],
        "subtotal": fmt(event.subtotal, cur),
        "credit_applied": fmt(event.credit_applied, cur),
        "amount_due": fmt(event.amount_due, cur),
        "currency": cur,
    }


def event_types(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
