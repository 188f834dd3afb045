"""Billing: invoices, billing credit, charges and their outcomes, payment methods.

Money moves exactly once (docs/payments.md). A decision prices its bill here and records the
invoice; when money is due now it hands back a ChargeDue instead of collecting it. The
aggregate then records a ChargeRequested under a key derived from the invoice id and the
attempt, never reused; the application charges the provider with that key and `settle`
records the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain import pricing, rules
from domain.commands import AddPaymentMethod, PayInvoice, RemovePaymentMethod
from domain.errors import LedgerError
from domain.money import MAX_AMOUNT, ZERO, fmt
from domain.payments import ChargeResult
from domain.periods import Period
from domain.subscription import billing_events, dunning, events, operations_pools, usage_events
from domain.subscription.billing_events import (
    BillingCreditApplied, BillingCreditIssued, ChargeDeclined, ChargeRequested, ChargeSubmitted, InvoiceIssued,
    PaymentActionRequired, PaymentFailed, PaymentMethodAdded, PaymentMethodRemoved, PaymentSucceeded,
    UpgradePaymentFailed,
)
from domain.subscription.context import ChargeDue, Context

if TYPE_CHECKING:
    from domain.subscription.aggregate import PendingCharge, Subscription

RENEWAL = "renewal"
INVOICE_PAYMENT = "invoice_payment"
COLLECTED_AFTER = (RENEWAL, dunning.RETRY)
"""Purposes of the collections of an invoice already issued, which no command waits on (R8)."""


def charge_declined(amount: Decimal, decline_code: str) -> LedgerError:
    """An immediate charge declined: refused, nothing changed but the fact (R12). A replay of
    the command by its idempotency key returns this same refusal."""
    return LedgerError("payment_failed", f"payment of {amount} declined ({decline_code}): nothing changed")


def payment_failed(amount: Decimal, message: str) -> LedgerError:
    """A declined payment of an open invoice: the invoice stays open and keeps blocking plan changes (R8)."""
    return LedgerError("payment_failed", f"payment of {amount} declined: {message}")


def action_required(amount: Decimal) -> LedgerError:
    return LedgerError("payment_action_required", f"payment of {amount} needs the customer to authenticate "
                       "(3-D Secure): the change waits until it is confirmed or abandoned")


def charge_key(workspace_id: str, invoice_id: str, attempt: int) -> str:
    """The provider idempotency key of one attempt to collect one invoice: used for nothing else."""
    return f"{workspace_id}:{invoice_id}:{attempt}"


@dataclass(frozen=True)
class Bill:
    """A priced bill (R26: lines, never a mystery charge), not yet recorded."""

    invoice_id: str
    lines: list[pricing.Line]
    totals: pricing.Totals
    purpose: str


def price(sub: Subscription, ctx: Context, lines: list[pricing.Line], purpose: str, *,
          immediate: bool = True, use_credit: bool = True) -> Bill:
    """Total the lines and apply billing credit, never above the bill (R27). Money due now needs
    a payment method (R7); a renewal (`immediate=False`) is issued anyway and may stay open (R8).
    Billing credit never buys AI credits (R10), so AI packs are priced with `use_credit=False`."""
    balance = sub.billing_credit if use_credit else ZERO
    totals = pricing.totals(lines, balance, ctx.catalog.policy)
    largest = max(abs(amount) for amount in [totals.subtotal, *(line.amount for line in lines)])
    if largest >= MAX_AMOUNT:  # refused here, not by the database's amount column after the charge
        currency = ctx.catalog.currency
        raise LedgerError("invalid_request", f"this bill would carry {fmt(largest, currency)} {currency}: the "
                          f"ledger records amounts under {MAX_AMOUNT:,.0f}")
    if immediate and totals.amount_due > 0:
        rules.check_payment_method(sub, ctx.cause)
    return Bill(sub.next_invoice_id(), lines, totals, purpose)


def issue(sub: Subscription, ctx: Context, bill: Bill, plan: str | None = None) -> ChargeDue | None:
    """Record the invoice and its credit; what is due now comes back as a ChargeDue (R25, R26)."""
    _record_invoice(sub, ctx, bill)
    if bill.totals.amount_due <= 0:
        return None
    method = sub.default_payment_method
    assert method is not None, "price() checked the payment method (R7)"
    return ChargeDue(bill.invoice_id, bill.totals.amount_due, method, bill.purpose, plan)


def issue_and_collect(sub: Subscription, ctx: Context, bill: Bill) -> None:
    """A renewal: the invoice is issued whatever happens, then its collection is requested."""
    _record_invoice(sub, ctx, bill)
    if bill.totals.amount_due > 0:
        collect(sub, ctx, bill.invoice_id, RENEWAL)


def _record_invoice(sub: Subscription, ctx: Context, bill: Bill) -> None:
    t = bill.totals
    sub.trigger(InvoiceIssued, ctx, invoice_id=bill.invoice_id, purpose=bill.purpose,
                lines=[line.as_dict() for line in bill.lines], subtotal=t.subtotal,
                credit_applied=t.credit_applied, amount_due=t.amount_due, currency=ctx.catalog.currency)
    if t.credit_applied:
        sub.trigger(BillingCreditApplied, ctx, amount=t.credit_applied, invoice_id=bill.invoice_id)
    if t.credit_issued:
        sub.trigger(BillingCreditIssued, ctx, amount=t.credit_issued, invoice_id=bill.invoice_id)


def collect(sub: Subscription, ctx: Context, invoice_id: str, purpose: str) -> None:
    """Ask for what an issued invoice still owes: a new attempt under a new key (R8)."""
    invoice = sub.invoices[invoice_id]
    method = sub.default_payment_method
    if method is None:
        dunning.record_failure(sub, ctx.meta(), ctx.catalog.policy, invoice_id, purpose, ctx.at, invoice["amount_due"],
                               "no_payment_method", "no payment method on file")
        return
    attempt = invoice["attempts"] + 1
    sub.trigger(ChargeRequested, ctx, invoice_id=invoice_id, attempt=attempt,
                charge_key=charge_key(sub.workspace_id, invoice_id, attempt), amount=invoice["amount_due"],
                currency=ctx.catalog.currency, payment_method=method, purpose=purpose, plan=None, effects=[])


def request_charge(sub: Subscription, ctx: Context, due: ChargeDue, effects: list[events.Event]) -> None:
    """Hold a purchase until its money has moved: the facts it pays for wait in the request."""
    sub.trigger(ChargeRequested, ctx, invoice_id=due.invoice_id, attempt=1,
                charge_key=charge_key(sub.workspace_id, due.invoice_id, 1), amount=due.amount,
                currency=ctx.catalog.currency, payment_method=due.payment_method, purpose=due.purpose,
                plan=due.plan, effects=[_as_effect(e) for e in effects])


def settle(sub: Subscription, invoice_id: str, result: ChargeResult, ctx: Context) -> LedgerError | None:
    """Record a pending charge's outcome. Succeeded: the purchase's facts, then the payment
    (R11). Declined or abandoned: a purchase is dropped and its invoice id void (R12); an
    issued invoice stays open (R8). Action required: it stays pending (3-D Secure)."""
    pending = sub.pending_charges[invoice_id]
    meta = _settlement_meta(pending, ctx)
    amount = pending["amount"]
    if result.outcome == "action_required":
        if not pending["action_required"]:
            sub.trigger_event(PaymentActionRequired, **meta, invoice_id=invoice_id, message=result.message)
        return action_required(amount)
    if result.ok:
        held = [(cls, fields | {"timestamp": ctx.at}) for cls, fields in map(held_fact, pending["effects"])]
        operations_pools.apply_held(sub, pending, held, ctx, meta)
        sub.trigger_event(PaymentSucceeded, **meta, invoice_id=invoice_id, amount=amount,
                          charge_id=result.charge_id, payment_method=pending["payment_method"])
        dunning.after_payment(sub, meta, ctx.at)
        return None
    code = result.decline_code or result.outcome
    message = result.message or ("the payment was abandoned" if result.outcome == "canceled" else "card declined")
    if not pending["effects"]:
        dunning.record_failure(sub, meta, ctx.catalog.policy, invoice_id, pending["purpose"], ctx.at, amount, code,
                               message)
        return payment_failed(amount, message)
    fields = {"purpose": pending["purpose"], "amount": amount, "decline_code": code, "message": message,
              "invoice_id": invoice_id}
    if pending["purpose"] == "upgrade":
        sub.trigger_event(UpgradePaymentFailed, **meta, **fields, plan=pending["plan"] or "")
    else:
        sub.trigger_event(ChargeDeclined, **meta, **fields)
    return charge_declined(amount, code)


def record_submission(sub: Subscription, invoice_id: str, reference: str, ctx: Context) -> None:
    """The provider's reference of a pending charge, before it is confirmed (ChargeSubmitted)."""
    sub.trigger_event(ChargeSubmitted, **_settlement_meta(sub.pending_charges[invoice_id], ctx),
                      invoice_id=invoice_id, provider_reference=reference)


def _settlement_meta(pending: PendingCharge, ctx: Context) -> dict[str, Any]:
    """An outcome is recorded as part of the command that asked for the money (same command id,
    actor and channel), whoever records it and whenever; one the provider reported by webhook
    keeps the channel it came through, `billing_provider` (R3)."""
    meta = ctx.meta() | pending["requested_by"] | {"cause": "payment"}
    if ctx.channel == "billing_provider":
        meta["channel"] = ctx.channel
    return meta


def _as_effect(event: events.Event) -> dict[str, Any]:
    fields = {k: v for k, v in event.__dict__.items() if k not in ("originator_id", "originator_version")}
    return {"type": type(event).__name__, "class_version": getattr(type(event), "class_version", 1), "fields": fields}


def held_fact(effect: dict[str, Any]) -> tuple[type[events.Event], dict[str, Any]]:
    """A held fact back as its class and fields, upcast if its class moved on while it waited."""
    name = effect["type"]
    cls = getattr(events, name, None) or getattr(usage_events, name, None) or getattr(billing_events, name)
    fields = dict(effect["fields"])
    version = effect["class_version"]
    while version < getattr(cls, "class_version", 1):
        getattr(cls, f"upcast_v{version}_v{version + 1}")(fields)
        version += 1
    return cls, fields


def credit_unused(sub: Subscription, ctx: Context, period: Period, item_key: str,
                  seats: int | None = None) -> list[pricing.Line]:
    """Unused time of what was paid this period, as a credit line (R13, R21, R22); for the plan,
    of `seats` seats when given (seats_storage.seats_credited decides how many)."""
    item = sub.current_item(ctx.catalog, seats) if item_key == "plan" else sub.current_addon(ctx.catalog)
    if item is None:
        return []
    line = pricing.unused_time_credit(item, period, ctx.at, ctx.catalog.policy, ctx.catalog.currency,
                                      f"{item_key}_credit", sub.charged_net(item_key))
    return [line] if line else []


def pay_invoice(sub: Subscription, cmd: PayInvoice, ctx: Context) -> None:
    """Pay the named open invoice, or every open invoice, oldest first, with the default payment
    method (R8, R20): one collection each, each settled on its own."""
    if cmd.invoice is not None:
        if sub.invoices.get(cmd.invoice, {}).get("status") != "open":
            raise LedgerError("no_open_invoice", f"no open invoice {cmd.invoice}")
        chosen = [cmd.invoice]
    else:
        chosen = sorted(sub.open_invoices(), key=billing_events.invoice_number)
        if not chosen:
            raise LedgerError("no_open_invoice", "no open invoice")
    rules.check_payment_method(sub, ctx.cause)
    for invoice_id in chosen:
        collect(sub, ctx, invoice_id, INVOICE_PAYMENT)


def add_payment_method(sub: Subscription, cmd: AddPaymentMethod, ctx: Context) -> None:
    sub.trigger(PaymentMethodAdded, ctx, payment_method=cmd.payment_method)


def remove_payment_method(sub: Subscription, cmd: RemovePaymentMethod, ctx: Context) -> None:
    if cmd.payment_method not in sub.payment_methods:
        raise LedgerError("invalid_request", f"payment method {cmd.payment_method} is not on file")
    sub.trigger(PaymentMethodRemoved, ctx, payment_method=cmd.payment_method)


def recorded_outcome(events: list[Any]) -> LedgerError | None:
    """The error a command's recorded facts amount to: a declined charge, a failed payment, or a
    charge still pending (awaiting the customer, or the provider's answer). Only the money the
    command waits on counts: an invoice it issues and collects after its change is made (the
    final invoice of a move to a free plan) is dunned as a renewal is, and the change stands."""
    waited = {e.invoice_id for e in events if isinstance(e, ChargeRequested) and e.purpose not in COLLECTED_AFTER}
    for event in events:
        if isinstance(event, ChargeDeclined):
            return charge_declined(event.amount, event.decline_code)
        if isinstance(event, PaymentFailed) and event.invoice_id in waited:
            return payment_failed(event.amount, event.message)
    settled = {e.invoice_id for e in events if isinstance(e, (PaymentSucceeded, PaymentFailed,
                                                              ChargeDeclined))}
    waiting = [e for e in events if isinstance(e, ChargeRequested) and e.invoice_id in waited - settled]
    if not waiting:
        return None
    if any(isinstance(e, PaymentActionRequired) and e.invoice_id in waited for e in events):
        return action_required(waiting[0].amount)
    return LedgerError("payment_pending", f"the payment of {waiting[0].amount} for invoice {waiting[0].invoice_id} "
                       "is pending: the provider has not answered yet (payments resolve asks again)")
