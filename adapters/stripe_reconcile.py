"""Ledger against Stripe: every payment recorded, every PaymentIntent that moved money.

The ledger's side is its recorded facts (those the invoices read model is built from): the
PaymentSucceeded of each invoice, the PaymentIntent ids recorded by ChargeSubmitted and the
charges still pending. Stripe's side is the PaymentIntents of the customers this ledger made,
listed per customer (on localstripe, which rejects `customer=`, all listed and filtered). A difference is anything that is not one succeeded
PaymentIntent per paid invoice, of the same amount and currency, and nothing else that moved
money. Refunds and disputes at Stripe that leave it holding less than a recorded payment are a
difference too (`taken_back`): the ledger records neither, so it still counts the invoice as paid in
full; a duplicate charge refunded in full is settled. An unrecorded PaymentIntent that was never
confirmed (a crash between creating it and recording its id) moved no money: it is listed as an
orphan, not a difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from adapters.stripe_gateway import StripeGateway, customers_table, from_minor_units, result_of
from domain.clock import loaded
from domain.ledger import Ledger
from domain.payments import GatewayUnavailable


def failed_at_stripe(intent: dict[str, Any]) -> str | None:
    """How a PaymentIntent ended without taking money, as the gateway reads it: `canceled`, or
    `declined` (Stripe leaves it `requires_payment_method` with the decline as `last_payment_error`)."""
    try:
        outcome = result_of(intent).outcome
    except GatewayUnavailable:  # no outcome yet
        return None
    return outcome if outcome in ("canceled", "declined") else None


HELD_BY_DISPUTE = frozenset({"needs_response", "under_review", "lost"})
"""A dispute's statuses while the card network holds the money, or once it gave it to the customer;
an inquiry (`warning_*`) takes nothing, and a won dispute gives it back."""


def still_held(intent: dict[str, Any]) -> tuple[Decimal, list[str]]:
    """What Stripe still holds for the merchant of a succeeded PaymentIntent: what it collected,
    less refunds, and nothing while a dispute holds it (the list expands `latest_charge`;
    reconcile reads a disputed charge's `dispute_status`); and, in words, what took the rest."""
    cur = intent["currency"]
    held = from_minor_units(intent["amount"], cur)
    charge = intent.get("latest_charge")
    if not isinstance(charge, dict):
        return held, []
    why = []
    if charge.get("amount_refunded"):
        refunded = from_minor_units(charge["amount_refunded"], cur)
        held -= refunded
        why.append(f"{refunded} {cur.upper()} refunded")
    status = intent.get("dispute_status")
    if charge.get("disputed") and held and (status is None or status in HELD_BY_DISPUTE):
        why.append(f"{held} {cur.upper()} disputed ({status or 'status unknown'})")
        held = from_minor_units(0, cur)
    return held, why


@dataclass(frozen=True)
class Difference:
    kind: str  # missing_at_stripe, missing_in_ledger, amount_mismatch, double_charge, unsettled, taken_back
    workspace: str
    invoice_id: str
    detail: str
    payment_intent: str | None = None


@dataclass
class Report:
    differences: list[Difference] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    payments: int = 0
    payment_intents: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.differences, "differences": [asdict(d) for d in self.differences],
                "orphans": self.orphans, "checked": {"payments": self.payments,
                                                     "payment_intents": self.payment_intents}}


def reconcile(ledger: Ledger, gateway: StripeGateway, workspace: str | None = None) -> Report:
    customers = dict(gateway.tables.run(lambda conn: [tuple(r) for r in conn.execute(
        select(customers_table.c.customer_id, customers_table.c.workspace_id))]))
    workspaces = [workspace] if workspace else ledger.workspaces()
    intents = list(gateway.payment_intents([c for c, ws in customers.items() if ws in workspaces]))
    for pi in intents:
        charge = pi.get("latest_charge")
        if pi["status"] == "succeeded" and isinstance(charge, dict) and charge.get("disputed"):
            pi["dispute_status"] = gateway.dispute_status(charge["id"])
    report = Report(payment_intents=len(intents))
    for ws in workspaces:
        mine = [pi for pi in intents if customers[pi["customer"]] == ws]
        _workspace(ledger, ws, mine, report)
    return report


def _workspace(ledger: Ledger, ws: str, intents: list[dict[str, Any]], report: Report) -> None:
    facts = ledger.workspace_events(ws)
    paid = {e.invoice_id: e for e in facts if type(e).__name__ == "PaymentSucceeded"}
    currency = {e.invoice_id: e.currency for e in facts if type(e).__name__ in ("InvoiceIssued", "ChargeRequested")}
    submitted = {e.provider_reference: e.invoice_id for e in facts if type(e).__name__ == "ChargeSubmitted"}
    sub = loaded(ledger, ws)  # a history broken by hand is still compared, fact by fact, as it stands
    pending = {p.get("provider_reference"): i for i, p in (sub.pending_charges.items() if sub else [])}
    report.payments += len(paid)
    by_id = {pi["id"]: pi for pi in intents}
    succeeded: dict[str, list[dict[str, Any]]] = {}
    held: dict[str, tuple[Decimal, list[str]]] = {}
    for pi in intents:
        if pi["status"] == "succeeded":
            succeeded.setdefault(pi["metadata"].get("invoice_id", ""), []).append(pi)
            held[pi["id"]] = still_held(pi)
        elif pi["id"] not in submitted:
            report.orphans.append(pi["id"])

    def differ(kind: str, invoice_id: str, detail: str, intent: str | None = None) -> None:
        report.differences.append(Difference(kind, ws, invoice_id, detail, intent))

    for invoice_id, payment in paid.items():
        found = succeeded.get(invoice_id, [])
        if not found:
            differ("missing_at_stripe", invoice_id, f"the ledger recorded a payment of {payment.amount} "
                   f"{currency.get(invoice_id, '')}; Stripe has no succeeded PaymentIntent for it")
            continue
        cur = currency.get(invoice_id, "")
        for pi in found:
            amount = from_minor_units(pi["amount"], pi["currency"])
            if amount != Decimal(payment.amount) or pi["currency"] != cur.lower():
                differ("amount_mismatch", invoice_id, f"the ledger recorded {payment.amount} {cur}, Stripe "
                       f"collected {amount} {pi['currency'].upper()}", pi["id"])
        total = sum((held[pi["id"]][0] for pi in found), Decimal(0))
        if total < Decimal(payment.amount) and cur.lower() == found[0]["currency"]:
            why = ", ".join(w for pi in found for w in held[pi["id"]][1])
            differ("taken_back", invoice_id, f"Stripe holds {total} {cur} of the {payment.amount} {cur} the ledger "
                   f"records as paid ({why}); the ledger records no refunds or disputes",
                   ", ".join(pi["id"] for pi in found))
    for invoice_id, found in succeeded.items():
        holding = [pi for pi in found if held[pi["id"]][0]]  # a duplicate refunded in full is settled
        if len(holding) > 1:
            differ("double_charge", invoice_id, f"{len(holding)} succeeded PaymentIntents for one invoice",
                   ", ".join(pi["id"] for pi in holding))
        if invoice_id not in paid:
            for pi in found:
                waiting = " (pending in the ledger: `payments resolve` records it)" if pi["id"] in pending else ""
                differ("missing_in_ledger", invoice_id, f"Stripe collected {from_minor_units(pi['amount'], pi['currency'])}"
                       f" {pi['currency'].upper()}; the ledger recorded no payment{waiting}", pi["id"])
    for reference, invoice_id in submitted.items():
        if reference not in by_id:
            differ("missing_at_stripe", invoice_id, "the ledger recorded this PaymentIntent; Stripe does not have it",
                   reference)
        elif reference in pending and (failed := failed_at_stripe(by_id[reference])):
            differ("unsettled", invoice_id, f"pending in the ledger, {failed} at Stripe: "
                   "`payments resolve` records it", reference)
