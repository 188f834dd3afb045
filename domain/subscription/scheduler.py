"""What falls due: renewals, trial ends, scheduled changes, notices, operations resets,
monthly AI credit grants (R14, R15, R17, R18, R22, R23).

Each item is recorded at its own due instant, in time order. A renewal's charge is requested,
not collected: the scheduler stops at a pending charge, the application settles it, and the
next item is decided knowing its outcome. A forecast (the upcoming invoice, previews) assumes
every charge succeeds and records no request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain import pricing
from domain.payments import ACTION_WINDOW, CANCELED, ChargeResult
from domain.periods import period_containing, period_number
from domain.subscription import billing, credits_operations, dunning, plan_changes
from domain.subscription.billing_events import PaymentSucceeded
from domain.subscription.context import Context
from domain.subscription.events import (
    DowngradeApplied, DowngradeNoticeDue, PeriodRenewed, SubscriptionCanceled, TrialExpired,
)
from domain.subscription.usage_events import OperationsExpired, OperationsReset

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

MAX_DUE_STEPS = 5000


def process_due(sub: Subscription, ctx: Context, forecast: bool = False, *, recorded_pending: bool = False) -> None:
    """Run every item due at or before ctx.at, each at its own instant, until a charge is pending.
    A `forecast` assumes the collections it asks for are paid; `recorded_pending`: not those
    already recorded, which wait for their outcome (a preview refuses what the command would),
    unless the command would give them up first (`given_up`)."""
    recorded = set(sub.pending_charges) if recorded_pending else set()
    for _ in range(MAX_DUE_STEPS):
        if forecast:
            for invoice_id, pending in list(sub.pending_charges.items()):
                if invoice_id in recorded:
                    if given_up(sub, pending, ctx.at):
                        billing.settle(sub, invoice_id, ChargeResult(CANCELED, message="abandoned"),
                                       ctx.system(ctx.at, "forecast"))
                    continue
                if pending["effects"]:  # a purchase is never assumed to land: what is due follows without it
                    billing.settle(sub, invoice_id, ChargeResult(CANCELED, message="forecast"),
                                   ctx.system(ctx.at, "forecast"))
                    continue
                sub.trigger(PaymentSucceeded, ctx.system(ctx.at, "forecast"), invoice_id=invoice_id,
                            amount=pending["amount"], charge_id=None, payment_method=pending["payment_method"])
        if sub.pending_charges:
            return
        due = next_due(sub, ctx.at)
        if due is None or due[0] > ctx.at:
            return
        at, what = due
        DUE[what](sub, ctx.system(at, what))
    raise RuntimeError("too many due items: is the clock sane?")


def next_due(sub: Subscription, now: datetime | None = None) -> tuple[datetime, str] | None:
    """The earliest item due, and when it is recorded. A suspended workspace renews nothing and
    is granted nothing; only a scheduled cancellation still applies at its period end (R8, R19).
    A retry is an attempt to take money, not a boundary: one the scheduler finds overdue is made
    at the run (`now`), after the rest of what fell due, and a period end waits while a retry is
    scheduled, so a scheduler that was not running neither tries the card several times at once
    nor ends the period before the retries the catalog gives (domain/subscription/dunning.py)."""
    candidates = []
    active = sub.status != "suspended"
    if sub.scheduled and not sub.scheduled["noticed"]:
        candidates.append((sub.scheduled["notice_at"], "notice"))
    if sub.ops_carried and sub.ops_carried_until:
        candidates.append((sub.ops_carried_until, "carry_expiry"))
    if active and sub.ops_reset_at and sub.period_end and sub.ops_reset_at < sub.period_end:
        candidates.append((sub.ops_reset_at, "operations_reset"))
    if active and sub.ai_grant_at and sub.period_end and sub.ai_grant_at < sub.period_end:
        candidates.append((sub.ai_grant_at, "ai_grant"))
    canceling = bool(sub.scheduled and sub.scheduled["kind"] == "cancel")
    retry = first_retry(sub)
    if sub.subscribed and sub.period_end and (canceling or (active and retry is None)):
        candidates.append((sub.period_end, "period_end"))
    if retry is not None:
        candidates.append((max(retry[0], now) if now else retry[0], "dunning_retry"))
    given_up = abandoned_at(sub)
    if given_up is not None:
        candidates.append((given_up, "abandon_waiting_charge"))
    return min(candidates) if candidates else None


def given_up(sub: Subscription, pending: dict[str, Any], at: datetime) -> bool:
    """Whether a command at `at` gives up this recorded charge before it decides, unless the
    customer confirmed it meanwhile (Settlement._settle, `blocking_due`): it waits for the
    customer (3-D Secure) and an item fell due behind it, the end of its own window among them (R12)."""
    due = sub.next_due_at()
    return bool(pending["action_required"]) and due is not None and due <= at


def abandoned_at(sub: Subscription) -> datetime | None:
    """R12: when a charge still waiting for the customer (3-D Secure) is given up, ACTION_WINDOW
    after it was asked for. Nothing runs at it (process_due stops at the pending charge): it is
    an instant due, at which Settlement abandons the charge, as at a period end behind it. A
    workspace with no period of its own (a first subscription) would otherwise wait for ever, and
    a confirmation weeks later would pay for time before it existed."""
    return min((pending["requested_at"] + ACTION_WINDOW for pending in sub.pending_charges.values()
                if pending["action_required"] and pending["requested_at"]), default=None)


def first_retry(sub: Subscription) -> tuple[datetime, str] | None:
    """(when, which invoice): the open invoice retried first, or None when none is. A retry
    made and awaiting its outcome is not due again: it was abandoned at once, as an item due
    behind a charge waiting for the customer, before they were asked (R8)."""
    return min(((inv["retry_at"], i) for i, inv in sub.invoices.items()
                if inv["status"] == "open" and inv["retry_at"] and i not in sub.pending_charges), default=None)


def due_dunning_retry(sub: Subscription, ctx: Context) -> None:
    """R8: an open invoice is tried again with the default payment method on its retry day."""
    retry = first_retry(sub)
    assert retry is not None
    billing.collect(sub, ctx, retry[1], dunning.RETRY)


def due_notice(sub: Subscription, ctx: Context) -> None:
    """R17: the notice of a scheduled downgrade, 7 days (policy) before it applies."""
    assert sub.scheduled is not None
    sub.trigger(DowngradeNoticeDue, ctx, plan=sub.scheduled["plan"], effective_at=sub.scheduled["effective_at"])


def due_carry_expiry(sub: Subscription, ctx: Context) -> None:
    """R18: carried-over operations last for the new cycle's length."""
    sub.trigger(OperationsExpired, ctx, operations=sub.ops_carried)


def due_operations_reset(sub: Subscription, ctx: Context) -> None:
    """R18: an annual tier's operations reset monthly; extra operations expire with the reset."""
    tier = sub.tier_of(ctx.catalog)
    assert sub.period_start is not None
    _, month = period_containing(sub.period_start, "month", ctx.at)
    sub.trigger(OperationsReset, ctx, allotment=tier.monthly_operations if tier else 0,
                expired_extra=sub.ops_extra,
                next_reset_at=month.end if sub.period_end and month.end < sub.period_end else None)


def due_ai_grant(sub: Subscription, ctx: Context) -> None:
    """R23: on the monthly cadence an annual plan opens a grant window every month."""
    plan = sub.plan_of(ctx.catalog)
    assert plan is not None
    credits_operations.grant_ai_credits(sub, ctx, plan)


def due_period_end(sub: Subscription, ctx: Context) -> None:
    """The period's end: a trial falls back (R15), a cancellation or a scheduled downgrade
    applies (R17, R19), then the next period renews."""
    catalog = ctx.catalog
    if sub.status == "trialing":
        fallback = catalog.trial_fallback()
        if fallback is None or fallback.kind != "free":  # a catalog published before R15's check: the trial just ends
            sub.trigger(SubscriptionCanceled, ctx, plan=sub.plan)
            return
        plan_changes.set_plan(sub, TrialExpired, ctx, fallback, None, None, None, None)
        return
    scheduled = sub.scheduled
    if scheduled and scheduled["kind"] == "cancel":
        credits_operations.final_invoice(sub, ctx)
        sub.trigger(SubscriptionCanceled, ctx, plan=sub.plan)
        return
    if sub.open_invoice and catalog.policy.dunning_final_action != "none":
        # never renew over an unpaid invoice (R8, R20): dunning's final action instead
        dunning.final_action(sub, ctx.meta(), catalog.policy, sub.open_invoice)
        return
    if scheduled and scheduled["kind"] == "downgrade":
        target = catalog.plan(scheduled["plan"] or "")
        assert target is not None
        tier = target.tier(scheduled["tier"], scheduled["interval"]) if scheduled["tier"] and scheduled["interval"] else None
        if not target.billable:  # billing ends here: what is still owed is billed, as on a cancel
            credits_operations.final_invoice(sub, ctx)
            plan_changes.set_plan(sub, DowngradeApplied, ctx, target, None, None, None, None,
                                  keep_team=scheduled["keep_team"])
            return
        interval = scheduled["interval"] or "month"
        # another interval starts its own cycle at the boundary (R14, R17)
        new_period = period_number(ctx.at, interval, 0) if interval != sub.interval else None
        item = pricing.plan_item(target, interval, scheduled["seats"], tier)
        assert item is not None
        plan_changes.set_plan(sub, DowngradeApplied, ctx, target, tier, interval, scheduled["seats"],
                              new_period, unit_price=item.unit_price, keep_team=scheduled["keep_team"])
    renew(sub, ctx)


def renew(sub: Subscription, ctx: Context) -> None:
    """The next period of a paid plan (and its storage add-on, R22) is invoiced in full; its
    grants are given (R18, R23); the invoice's collection is requested."""
    catalog = ctx.catalog
    plan = sub.plan_of(catalog)
    if plan is None or not plan.billable or sub.anchor is None or sub.interval is None:
        return
    _, nxt = period_containing(sub.anchor, sub.interval, ctx.at)
    item = pricing.plan_item(plan, sub.interval, sub.seats, sub.tier_of(catalog))
    assert item is not None
    addon = pricing.addon_item(catalog, sub.storage_addon, sub.interval)
    lines = [pricing.full_charge(item, nxt, catalog.currency, "plan_charge")]
    if addon:
        lines.append(pricing.full_charge(addon, nxt, catalog.currency, "addon_charge"))
    lines += credits_operations.overage_lines(sub, ctx)
    sub.trigger(PeriodRenewed, ctx, period_start=nxt.start, period_end=nxt.end, seats=sub.seats,
                unit_price=item.unit_price, addon_price=addon.unit_price if addon else None)
    credits_operations.grant_cycle(sub, ctx, plan, reset_operations=True)
    bill = billing.price(sub, ctx, lines, "renewal", immediate=False)
    credits_operations.overage_billed(sub, ctx, bill)
    billing.issue_and_collect(sub, ctx, bill)


DUE: dict[str, Callable[[Subscription, Context], None]] = {
    "notice": due_notice,
    "carry_expiry": due_carry_expiry,
    "operations_reset": due_operations_reset,
    "ai_grant": due_ai_grant,
    "dunning_retry": due_dunning_retry,
    "period_end": due_period_end,
}
