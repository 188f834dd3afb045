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
from domain.subscription.billing import INVOICE_PAYMENT, RENEWAL
from domain.subscription.billing_events import purpose_words
from domain.subscription.dunning import RETRY
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
    charge = f"charge of {fmt(event.amount, scene.currency)} for the {purpose_words(event.purpose)}"
    if event.decline_code == CANCELED:
        return f"{charge} {ABANDONED}; nothing changed"
    return f"{charge} declined ({event.decline_code}); nothing changed"


COLLECTIONS = {RENEWAL: "as it is issued", RETRY: "a retry after a failed payment",
               INVOICE_PAYMENT: "asked for by pay-invoice"}
"""Why an issued invoice is collected, by the purpose its charge records: a renewal's names the
first collection of any invoice issued for collection (a final invoice's too)."""


@summary.register(Subscription.ChargeRequested)
def _charge_requested(event: Subscription.ChargeRequested, scene: Scene) -> str:
    key = f"(attempt {event.attempt}, key {event.charge_key})"
    amount = fmt(event.amount, scene.currency)
    if event.effects:
        return (f"charge of {amount} for the {purpose_words(event.purpose)} requested on {event.invoice_id} {key}: "
                "held until it is paid")
    why = COLLECTIONS.get(event.purpose, purpose_words(event.purpose))
    return f"charge of {amount} requested to collect {event.invoice_id}, {why} {key}"


@summary.register(Subscription.ChargeSubmitted)
def _charge_submitted(event: Subscription.ChargeSubmitted, scene: Scene) -> str:
    return f"charge on {event.invoice_id} submitted to the provider as {event.provider_reference}, not yet confirmed"


@summary.register(Subscription.PaymentActionRequired)
def _payment_action_required(event: Subscription.PaymentActionRequired, scene: Scene) -> str:
    return f"payment on {event.invoice_id} waits for the customer's authentication (3-D Secure)"


@summary.register(Subscription.PaymentMethodAdded)
def _payment_method_added(event: Subscription.PaymentMethodAdded, scene: Scene) -> str:
    return f"payment method {event.payment_method} added: the one charged from now on"


@summary.register(Subscription.PaymentMethodRemoved)
def _payment_method_removed(event: Subscription.PaymentMethodRemoved, scene: Scene) -> str:
    left = scene.sub.default_payment_method
    return f"payment method {event.payment_method} removed; " + (
        f"{left} is charged from now on" if left else "none is left on file")


@summary.register(Subscription.ContractSet)
def _contract_set(event: Subscription.ContractSet, scene: Scene) -> str:
    if event.contract is None:
        return "custom contract ended: self-serve changes are open again"
    return f"custom contract set ({event.contract}): plan, seat, interval and add-on changes go through sales (R9)"


@summary.register(Subscription.DowngradeScheduled)
def _downgrade_scheduled(event: Subscription.DowngradeScheduled, scene: Scene) -> str:
    return f"downgrade to {event.plan} scheduled for {iso(event.effective_at)}"


@summary.register(Subscription.DowngradeNoticeDue)
def _downgrade_notice(event: Subscription.DowngradeNoticeDue, scene: Scene) -> str:
    return f"notice due: the downgrade to {event.plan} takes effect {iso(event.effective_at)}"


@summary.register(Subscription.DowngradeCancelled)
def _downgrade_cancelled(event: Subscription.DowngradeCancelled, scene: Scene) -> str:
    return f"scheduled downgrade to {event.plan} called off: {scene.plan_name} goes on (R17)"


@summary.register(Subscription.CancellationScheduled)
def _cancellation_scheduled(event: Subscription.CancellationScheduled, scene: Scene) -> str:
    return f"cancellation scheduled for {iso(event.effective_at)}, the end of the paid period"


@summary.register(Subscription.CancellationCancelled)
def _cancellation_cancelled(event: Subscription.CancellationCancelled, scene: Scene) -> str:
    return f"scheduled cancellation called off: {scene.plan_name} goes on (R17)"


@summary.register(Subscription.SubscriptionCanceled)
def _canceled(event: Subscription.SubscriptionCanceled, scene: Scene) -> str:
    return f"subscription to {scene.from_name or event.plan} canceled" if event.plan else "subscription canceled"


@summary.register(Subscription.SeatsChanged)
def _seats_changed(event: Subscription.SeatsChanged, scene: Scene) -> str:
    text = f"seats {event.previous} -> {event.seats}"
    if event.scheduled_seats is not None and scene.sub.scheduled:
        text += f"; the scheduled downgrade to {scene.sub.scheduled['plan']} starts with {event.scheduled_seats} seats"
    return text


@summary.register(Subscription.MembersChanged)
def _members_changed(event: Subscription.MembersChanged, scene: Scene) -> str:
    return f"members {event.previous} -> {event.members}"


@summary.register(Subscription.StorageUsageReported)
def _storage_reported(event: Subscription.StorageUsageReported, scene: Scene) -> str:
    return f"storage used: {event.gb} GB"


@summary.register(Subscription.StorageAddonChanged)
def _storage_addon(event: Subscription.StorageAddonChanged, scene: Scene) -> str:
    price = f" at {fmt(event.unit_price, scene.currency)}" if event.unit_price is not None and event.addon else ""
    return f"storage add-on {event.previous or 'none'} -> {event.addon or 'none'}{price}"


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


@summary.register(Subscription.AICreditPackBought)
def _ai_pack_bought(event: Subscription.AICreditPackBought, scene: Scene) -> str:
    return f"AI credit pack {event.pack} bought: {event.credits:,} credits for {fmt(event.price, scene.currency)} " \
        f"on {event.invoice_id}"


@summary.register(Subscription.AICreditsConsumed)
def _ai_consumed(event: Subscription.AICreditsConsumed, scene: Scene) -> str:
    return (f"{event.credits:,} AI credits used: {event.from_granted:,} of the plan's grant, "
            f"{event.from_purchased:,} purchased")


@summary.register(Subscription.AICreditsProrated)
def _ai_credits_prorated(event: Subscription.AICreditsProrated, scene: Scene) -> str:
    return (f"AI credit grant re-valued with the time credited back: {event.formula}; "
            f"{event.withdrawn:,} withdrawn, {event.debt:,} owed")


@summary.register(Subscription.OperationsOverageBilled)
def _overage_billed(event: Subscription.OperationsOverageBilled, scene: Scene) -> str:
    return (f"{event.operations:,} operations beyond the allowance billed on {event.invoice_id}: "
            f"{fmt(event.amount, scene.currency)}")


@summary.register(Subscription.OperationsUsed)
def _operations_used(event: Subscription.OperationsUsed, scene: Scene) -> str:
    parts = [f"{n:,} {source}" for n, source in ((event.from_carried, "carried over"),
                                                 (event.from_allotment, "of the allowance"),
                                                 (event.from_extra, "bought")) if n]
    over = f", {event.overage:,} beyond the allowance" if event.overage else ""
    return f"{event.operations:,} operations used" + (f" ({', '.join(parts)})" if parts else "") + over


@summary.register(Subscription.OperationsBought)
def _operations_bought(event: Subscription.OperationsBought, scene: Scene) -> str:
    return f"{event.operations:,} operations bought for {fmt(event.price, scene.currency)} on {event.invoice_id}"


@summary.register(Subscription.OperationsCarriedOver)
def _operations_carried(event: Subscription.OperationsCarriedOver, scene: Scene) -> str:
    return (f"{event.operations:,} unused operations carried over until {iso(event.until)}, at "
            f"{fmt(event.rate_price, scene.currency)} per {event.rate_operations:,} (R18)")


@summary.register(Subscription.OperationsConvertedToCredit)
def _operations_converted(event: Subscription.OperationsConvertedToCredit, scene: Scene) -> str:
    return (f"{event.operations:,} unused operations turned into billing credit of "
            f"{fmt(event.amount, scene.currency)}: {event.formula}")


@summary.register(Subscription.OperationsReset)
def _operations_reset(event: Subscription.OperationsReset, scene: Scene) -> str:
    expired = f"; {event.expired_extra:,} bought operations expired" if event.expired_extra else ""
    return f"operations allowance reset to {event.allotment:,}{expired}"


@summary.register(Subscription.OperationsExpired)
def _operations_expired(event: Subscription.OperationsExpired, scene: Scene) -> str:
    return f"{event.operations:,} carried-over operations expired unused (R18)"


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
