"""The audit trail's summary column: one sentence per event for a person reading the trail
(projections/audit_trail.py), e.g. 'Pro -> Team, charged 20.00'."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import singledispatch
from typing import Any

from domain.catalog import Catalog
from domain.money import fmt
from domain.payments import CANCELED
from domain.subscription import Subscription
from projections.commands_trail import following
from projections.store import iso

ABANDONED = "canceled: the customer never completed the card authentication"
"""How a charge abandoned at 3-D Secure (CANCELED) reads: no bank declined it."""


@dataclass(slots=True)
class Scene:
    """What a summary reads besides its event: the aggregate after it, its catalog, the plan's
    name before it, and the ledger (for the events the same command recorded). Not frozen: one
    is made per event projected, and a frozen dataclass is several times slower to make."""

    sub: Subscription
    catalog: Catalog
    from_name: str | None
    source: Any
    seen: Mapping[int, Any] | None = None
    """The workspace's events of the batch being projected, by version (see commands_trail.py)."""

    @property
    def currency(self) -> str:
        return self.catalog.currency

    @property
    def plan_name(self) -> str:
        plan = self.sub.plan_of(self.catalog)
        return plan.name if plan else (self.sub.plan or "none")


@singledispatch
def summary(event: Subscription.Event, scene: Scene) -> str:
    """A sentence for a person reading the trail, e.g. 'Pro -> Team, charged 20.00': the one
    registered for the event's class (`@summary.register(Subscription.X)`, inherited by its
    subclasses), else the event's type name."""
    return type(event).__name__


@summary.register(Subscription.PlanSet)
def _plan_set(event: Subscription.PlanSet, scene: Scene) -> str:
    name, from_name = scene.plan_name, scene.from_name
    text = f"{from_name} -> {name}" if from_name and from_name != name else name
    if event.interval:
        text += f" ({event.interval}ly"
        text += f", {event.seats} seats)" if event.seats else ")"
    return f"{type(event).__name__}: {text}{_billed_with(event, scene)}"


@summary.register(Subscription.TierChanged)
def _tier_changed(event: Subscription.TierChanged, scene: Scene) -> str:
    tiers = f"{event.from_tier:,} -> {event.tier:,}" if event.from_tier and event.tier else f"{event.tier}"
    return f"TierChanged: {scene.plan_name} {tiers} operations/{event.interval}{_billed_with(event, scene)}"


def _billed_with(event: Subscription.PlanSet, scene: Scene) -> str:
    """', charged X' (or what the plan change's invoice said), from the invoice the command issued."""
    bill = next((e for e in following(scene.source, event, scene.seen) if isinstance(e, Subscription.InvoiceIssued)), None)
    if bill is None:
        return ""
    cur = scene.currency
    return f", charged {fmt(bill.amount_due, cur)}" if bill.amount_due > 0 else \
        f", nothing due (subtotal {fmt(bill.subtotal, cur)})"


@summary.register(Subscription.InvoiceIssued)
def _invoice_issued(event: Subscription.InvoiceIssued, scene: Scene) -> str:
    cur = scene.currency
    return (f"invoice {event.invoice_id} ({event.purpose}): {len(event.lines)} line(s), subtotal "
            f"{fmt(event.subtotal, cur)}, credit applied {fmt(event.credit_applied, cur)}, "
            f"due {fmt(event.amount_due, cur)}")


@summary.register(Subscription.PaymentSucceeded)
def _payment_succeeded(event: Subscription.PaymentSucceeded, scene: Scene) -> str:
    return f"payment of {fmt(event.amount, scene.currency)} on {event.invoice_id} succeeded"


@summary.register(Subscription.PaymentFailed)
def _payment_failed(event: Subscription.PaymentFailed, scene: Scene) -> str:
    payment = f"payment of {fmt(event.amount, scene.currency)} on {event.invoice_id}"
    text = f"{payment} {ABANDONED}" if event.decline_code == CANCELED else f"{payment} failed: {event.decline_code}"
    return text + (f"; retry on {iso(event.retry_at)}" if event.retry_at else "")


@summary.register(Subscription.ChargeDeclined)
def _charge_declined(event: Subscription.ChargeDeclined, scene: Scene) -> str:
    charge = f"charge of {fmt(event.amount, scene.currency)} for {event.purpose}"
    if event.decline_code == CANCELED:
        return f"{charge} {ABANDONED}; nothing changed"
    return f"{charge} declined ({event.decline_code}); nothing changed"


@summary.register(Subscription.ChargeRequested)
def _charge_requested(event: Subscription.ChargeRequested, scene: Scene) -> str:
    what = "held until it is paid" if event.effects else "collecting an issued invoice"
    return (f"charge of {fmt(event.amount, scene.currency)} for {event.purpose} requested on {event.invoice_id} "
            f"(attempt {event.attempt}, key {event.charge_key}): {what}")


@summary.register(Subscription.ChargeSubmitted)
def _charge_submitted(event: Subscription.ChargeSubmitted, scene: Scene) -> str:
    return f"charge on {event.invoice_id} submitted to the provider as {event.provider_reference}, not yet confirmed"


@summary.register(Subscription.PaymentActionRequired)
def _payment_action_required(event: Subscription.PaymentActionRequired, scene: Scene) -> str:
    return f"payment on {event.invoice_id} waits for the customer's authentication (3-D Secure)"


@summary.register(Subscription.DowngradeScheduled)
def _downgrade_scheduled(event: Subscription.DowngradeScheduled, scene: Scene) -> str:
    return f"downgrade to {event.plan} scheduled for {iso(event.effective_at)}"


@summary.register(Subscription.SeatsChanged)
def _seats_changed(event: Subscription.SeatsChanged, scene: Scene) -> str:
    text = f"seats {event.previous} -> {event.seats}"
    if event.scheduled_seats is not None and scene.sub.scheduled:
        text += f"; the scheduled downgrade to {scene.sub.scheduled['plan']} starts with {event.scheduled_seats} seats"
    return text


@summary.register(Subscription.MembersChanged)
def _members_changed(event: Subscription.MembersChanged, scene: Scene) -> str:
    return f"members {event.previous} -> {event.members}"


@summary.register(Subscription.BillingCreditIssued)
def _billing_credit_issued(event: Subscription.BillingCreditIssued, scene: Scene) -> str:
    return f"billing credit {fmt(event.amount, scene.currency)} issued"


@summary.register(Subscription.BillingCreditApplied)
def _billing_credit_applied(event: Subscription.BillingCreditApplied, scene: Scene) -> str:
    return f"billing credit {fmt(event.amount, scene.currency)} applied to {event.invoice_id}"


@summary.register(Subscription.PeriodRenewed)
def _period_renewed(event: Subscription.PeriodRenewed, scene: Scene) -> str:
    return f"{scene.plan_name} renewed: {iso(event.period_start)} to {iso(event.period_end)}"


@summary.register(Subscription.AICreditsGranted)
def _ai_credits_granted(event: Subscription.AICreditsGranted, scene: Scene) -> str:
    text = f"{event.credits:,} AI credits granted ({event.expired:,} left unspent expired)"
    return text + (f", {event.debt_repaid:,} repaid first" if event.debt_repaid else "")


@summary.register(Subscription.AICreditsProrated)
def _ai_credits_prorated(event: Subscription.AICreditsProrated, scene: Scene) -> str:
    return (f"AI credit grant re-valued with the time credited back: {event.formula}; "
            f"{event.withdrawn:,} withdrawn, {event.debt:,} owed")


@summary.register(Subscription.OperationsOverageBilled)
def _overage_billed(event: Subscription.OperationsOverageBilled, scene: Scene) -> str:
    return (f"{event.operations:,} operations beyond the allowance billed on {event.invoice_id}: "
            f"{fmt(event.amount, scene.currency)}")


@summary.register(Subscription.OperationsRecounted)
def _operations_recounted(event: Subscription.OperationsRecounted, scene: Scene) -> str:
    over = f", {event.overage:,} beyond it" if event.overage else ""
    return (f"{event.operations:,} operations reported while {event.invoice_id} awaited payment counted against the "
            f"new allowance{over}: {event.carried + event.allotment + event.extra:,} left")


@summary.register(Subscription.WorkspaceSuspended)
def _suspended(event: Subscription.WorkspaceSuspended, scene: Scene) -> str:
    return f"suspended: the last retry of {event.invoice_id} failed; paid features locked until it is paid"


@summary.register(Subscription.WorkspaceReactivated)
def _reactivated(event: Subscription.WorkspaceReactivated, scene: Scene) -> str:
    restart = f"; a new period starts {iso(event.restart_at)}" if event.restart_at else ""
    return f"reactivated: every open invoice paid{restart}"


@summary.register(Subscription.WorkspaceRegistered)
def _workspace_registered(event: Subscription.WorkspaceRegistered, scene: Scene) -> str:
    return f"workspace {event.workspace_id} registered on catalog {event.catalog_id}"


# ------------------------------------------------------------------ reading
