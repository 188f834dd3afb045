"""The money facts: invoices, billing credit, charges and their outcomes, payment methods.

A charge is two facts apart (docs/payments.md): `ChargeRequested` records the decision,
the invoice id and the key the money will move under, before any provider is called (a
provider that creates its charge object first has its reference recorded, `ChargeSubmitted`); then
`PaymentSucceeded` (after the change it paid for, R11), `ChargeDeclined` (nothing changed,
R12), `PaymentFailed` (an open invoice stays open, R8) or `PaymentActionRequired` (3-D
Secure: still pending) records what the provider answered.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.money import ZERO
from domain.subscription.events import Event

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def invoice_number(invoice_id: str) -> int:
    """The sequence number in `in_<workspace>_<NNNN>`: ids are minted from it and never reused."""
    tail = invoice_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def workspace_of_invoice(invoice_id: str) -> str | None:
    """The workspace an invoice id names (`in_<workspace>_<NNNN>`), or None if it names none."""
    if not invoice_id.startswith("in_"):
        return None
    workspace, sep, number = invoice_id[3:].rpartition("_")
    try:
        return check_workspace_id(workspace) if sep and number.isdigit() else None
    except LedgerError:
        return None


class InvoiceIssued(Event):
    invoice_id: str
    purpose: str
    lines: list[dict[str, Any]]
    subtotal: Decimal
    credit_applied: Decimal
    amount_due: Decimal
    currency: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.invoice_count = max(sub.invoice_count, invoice_number(self.invoice_id))
        if self.amount_due > 0:  # an invoice settled when issued is paid: not kept (Subscription.invoices)
            sub.invoices[self.invoice_id] = {"amount_due": self.amount_due, "status": "open", "attempts": 0,
                                             "failed_at": None, "retry_at": None, "retries": 0}
        for line in self.lines:
            item = line_item(line["kind"])
            if item and line["period_end"] is not None:
                key = f"{item}@{line['period_end'].isoformat()}"
                sub.charged[key] = sub.charged.get(key, ZERO) + line["amount"]


class BillingCreditIssued(Event):
    amount: Decimal
    invoice_id: str | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.billing_credit += self.amount


class BillingCreditApplied(Event):
    amount: Decimal
    invoice_id: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.billing_credit -= self.amount


class ChargeRequested(Event):
    """Money is about to move: `amount` on `payment_method` under `charge_key`, which names
    this invoice and attempt and is never used for anything else. `effects` are the facts the
    charge pays for (a purchase), recorded only once it succeeds; empty when it collects an
    invoice already issued (renewal, pay-invoice)."""

    invoice_id: str
    attempt: int
    charge_key: str
    amount: Decimal
    currency: str
    payment_method: str
    purpose: str
    plan: str | None
    effects: list[dict[str, Any]]

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.invoice_count = max(sub.invoice_count, invoice_number(self.invoice_id))
        if self.invoice_id in sub.invoices:
            sub.invoices[self.invoice_id]["attempts"] = self.attempt
        sub.pending_charges[self.invoice_id] = {
            "invoice_id": self.invoice_id, "attempt": self.attempt, "charge_key": self.charge_key,
            "amount": self.amount, "currency": self.currency, "payment_method": self.payment_method,
            "purpose": self.purpose, "plan": self.plan, "effects": self.effects, "action_required": False,
            "requested_at": self.timestamp, "provider_reference": None,
            "requested_by": {
                "actor_id": self.actor_id, "actor_role": self.actor_role, "channel": self.channel,
                "reason": self.reason, "idempotency_key": self.idempotency_key, "args_hash": self.args_hash,
                "command_id": self.command_id,
            },
        }


class ChargeSubmitted(Event):
    """The provider holds an unconfirmed charge object for a pending charge (Stripe: a
    PaymentIntent, not yet confirmed, so no money has moved), recorded before it is confirmed:
    a retry or a recovery confirms or reads this one by its reference and never makes another."""

    invoice_id: str
    provider_reference: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.pending_charges[self.invoice_id]["provider_reference"] = self.provider_reference


class PaymentActionRequired(Event):
    """The provider wants the customer to authenticate (3-D Secure): the charge stays pending."""

    invoice_id: str
    message: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.pending_charges[self.invoice_id]["action_required"] = True


class PaymentSucceeded(Event):
    invoice_id: str
    amount: Decimal
    charge_id: str | None
    payment_method: str | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.pending_charges.pop(self.invoice_id, None)
        del sub.invoices[self.invoice_id]  # paid: not kept (Subscription.invoices)
        if sub.status == "past_due" and not sub.open_invoices():
            sub.status = "active"


class PaymentFailed(Event):
    """A charge for an issued invoice failed: the invoice stays open and blocks changes (R8).
    `failed_at`: the invoice's first failure, which anchors its dunning; `retry_at`: its next
    automatic retry, or None; `retries`: the automatic retries made so far, this one included
    (domain/subscription/dunning.py). v3 added the first two, v4 the count (None before it)."""

    class_version = 4
    invoice_id: str
    amount: Decimal
    decline_code: str
    message: str
    failed_at: datetime | None
    retry_at: datetime | None
    retries: int | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["failed_at"] = None
        state["retry_at"] = None

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        state["retries"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.pending_charges.pop(self.invoice_id, None)
        invoice = sub.invoices[self.invoice_id]
        invoice["status"] = "open"
        invoice["failed_at"], invoice["retry_at"] = self.failed_at, self.retry_at
        # v2 failures began no dunning (failed_at None): none counted, as a snapshot's upcast says
        invoice["retries"] = self.retries if self.failed_at is not None else 0
        if sub.status in ("active", "trialing"):
            sub.status = "past_due"


class ChargeDeclined(Event):
    """An immediate charge was declined (or abandoned): nothing was bought, nothing changed
    (R12), and its invoice id is void, never used again. v3 added `invoice_id`."""

    class_version = 3
    purpose: str
    amount: Decimal
    decline_code: str
    message: str
    invoice_id: str | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["invoice_id"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        if self.invoice_id:
            sub.pending_charges.pop(self.invoice_id, None)


class UpgradePaymentFailed(ChargeDeclined):
    plan: str


class PaymentMethodAdded(Event):
    payment_method: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.payment_methods = [p for p in sub.payment_methods if p != self.payment_method]
        sub.payment_methods.append(self.payment_method)


class PaymentMethodRemoved(Event):
    payment_method: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.payment_methods = [p for p in sub.payment_methods if p != self.payment_method]


class ContractSet(Event):
    contract: str | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.contract = self.contract


PURPOSES = {"seats": "seat change", "storage_addon": "storage add-on", "ai_credit_pack": "AI credit pack",
            "operations": "operations pack", "final": "final invoice"}


def purpose_words(purpose: str) -> str:
    """An invoice's or a charge's purpose as support says it to a customer, where its code is not a word."""
    return PURPOSES.get(purpose, purpose.replace("_", " "))


def line_item(kind: str) -> str | None:
    """Which recurring item a line bills: 'plan' (plan and seats), 'addon', or None (one-time)."""
    if kind.startswith(("plan_", "seat_")):
        return "plan"
    if kind.startswith("addon_"):
        return "addon"
    return None


def credit_beyond(invoice: InvoiceIssued, events: list[Any]) -> tuple[Decimal, Decimal]:
    """What a net-negative invoice's credit became, read from the facts recorded with it:
    (issued as billing credit, forfeited under the catalog's policy), R27."""
    issued = sum((e.amount for e in events if isinstance(e, BillingCreditIssued) and e.invoice_id == invoice.invoice_id),
                 ZERO)
    return issued, max(-invoice.subtotal, ZERO) - issued
