"""Plan changes: subscribe, upgrade, downgrade, cancel (R4, R11-R18).

Each decision runs every check before its first fact and returns the money it needs now
(a ChargeDue) instead of collecting it: what it pays for is kept only once paid (R11, R12).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain import pricing, rules
from domain.catalog import Plan, Tier
from domain.commands import Cancel, CancelChange, ChangePlan, SetContract, SetSeats, Subscribe
from domain.errors import LedgerError
from domain.money import ZERO
from domain.periods import Period, period_number, plus_days
from domain.subscription import billing, credits_operations, seats_storage
from domain.subscription.billing_events import ContractSet
from domain.subscription.context import ChargeDue, Context
from domain.subscription.events import (
    CancellationCancelled, CancellationScheduled, DowngradeApplied, DowngradeCancelled, DowngradeNoticeDue,
    DowngradeScheduled, IntervalChanged, PlanSet, PlanUpgraded, Subscribed, SubscriptionCanceled, TierChanged,
    TrialConverted, TrialStarted,
)
from domain.subscription.usage_events import AICreditsGranted, OperationsCarriedOver, OperationsConvertedToCredit

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def subscribe(sub: Subscription, cmd: Subscribe, ctx: Context) -> ChargeDue | None:
    """Start a trial, Free, or a paid plan anchored now (R15); never around an open invoice (R8, R20)."""
    if sub.subscribed:
        current = sub.plan_of(ctx.catalog)
        raise LedgerError("already_subscribed", f"already subscribed to {current.name if current else sub.plan}: "
                          "use change-plan")
    rules.check_no_open_invoice(sub)
    plan = rules.resolve_plan(ctx.catalog, cmd.plan)
    tier = rules.resolve_tier(plan, cmd.tier, cmd.interval)
    rules.check_seats_for_plan(plan, cmd.seats)
    if plan.kind == "trial":
        if sub.trial_used:  # one trial per workspace, however it ended (R15)
            raise LedgerError("trial_used", f"this workspace has had its {plan.name.lower()}: choose a plan to subscribe")
        end = plus_days(ctx.at, plan.trial_days or 0)
        set_plan(sub, TrialStarted, ctx, plan, None, None, None, Period(ctx.at, end))
        return None
    if plan.kind == "free":
        set_plan(sub, Subscribed, ctx, plan, None, None, None, None)
        return None
    return start_paid(sub, Subscribed, ctx, plan, tier, cmd.interval, cmd.seats, "subscription")


def change_plan(sub: Subscription, cmd: ChangePlan, ctx: Context) -> ChargeDue | None:
    """Another plan, tier, interval or seat count: refused on the current plan (R4) or while an
    invoice is open (R8); then an upgrade (R11-R16) or a downgrade (R5, R6, R17, R18)."""
    require_subscription(sub)
    rules.check_no_open_invoice(sub)
    catalog = ctx.catalog
    current = sub.plan_of(catalog)
    target = rules.resolve_plan(catalog, cmd.plan)
    if target.kind == "trial":
        raise LedgerError("invalid_request", f"{target.name} starts only with subscribe, on a new workspace")
    interval = cmd.interval or sub.interval or "month"
    tier = rules.resolve_tier(target, cmd.tier, interval)
    rules.check_seats_for_plan(target, cmd.seats)
    seats = (cmd.seats or (sub.seats if current and current.per_seat else None) or max(sub.members, 1)) \
        if target.per_seat else None
    rules.check_seats_for_plan(target, seats, implied=cmd.seats is None)
    if seats is not None and seats < (sub.seats or 0):  # a seat reduction, whichever way the plan moves (R5)
        rules.check_members_fit(sub.members, seats, target.name)
    same_plan = target.id == sub.plan and (tier.operations if tier else None) == sub.tier and (
        not target.billable or interval == sub.interval)
    if same_plan:
        if target.per_seat and seats != sub.seats:
            assert seats is not None
            return seats_storage.set_seats(sub, SetSeats(seats=seats), ctx)
        raise LedgerError("already_on_plan", f"already on {target.name}" + (f" ({interval}ly)" if target.billable else ""))
    assert current is not None
    if not current.billable:
        way = "upgrade" if target.billable else "downgrade"  # e.g. a trial ended early for Free
    else:
        way = pricing.direction(current, sub.interval or "month", sub.tier_of(catalog), target, interval, tier)
        if way == "same":
            way = "upgrade" if (seats or 0) > (sub.seats or 0) else "downgrade"
    if way == "upgrade":
        return upgrade(sub, ctx, current, target, tier, interval, seats, cmd.keep_team)
    return downgrade(sub, ctx, current, target, tier, interval, seats, cmd.keep_team)


def upgrade(sub: Subscription, ctx: Context, current: Plan, target: Plan, tier: Tier | None, interval: str,
            seats: int | None, keep_team: str | None) -> ChargeDue | None:
    """R7, R11, R13: prorated to the end of this cycle (credit for unused time, charge for the
    new plan), or a new cycle from now (R14, R15; 004's policy, R16)."""
    rules.check_payment_method(sub, ctx.cause)
    rules.check_team_choice(current, target, keep_team)
    event, extra = upgrade_event(sub, ctx, current, target, tier)
    new_cycle = not current.billable or ctx.catalog.policy.upgrade_new_cycle or interval != sub.interval
    if new_cycle:
        return start_paid(sub, event, ctx, target, tier, interval, seats, "upgrade", keep_team=keep_team, extra=extra)
    period = sub.period()
    assert period is not None
    policy, currency = ctx.catalog.policy, ctx.catalog.currency
    new_item = pricing.plan_item(target, interval, seats, tier)
    assert new_item is not None
    charge = pricing.prorated_charge(new_item, period, ctx.at, policy, currency, "plan_charge")
    pools = credits_operations.unused_operations(sub, ctx) if policy.upgrade_credit == "unused_operations" else []
    if pools:  # R16: the credit follows upgrade_credit whatever the cycle policy, capped at this bill
        credit = pricing.operations_credit(pools, charge.amount, currency, ctx.at)
        lines = [credit] if credit else []
    else:
        lines = billing.credit_unused(sub, ctx, period, "plan", seats_storage.seats_credited(sub, policy, seats))
    bill = billing.price(sub, ctx, lines + [charge], "upgrade")
    supersede_schedule(sub, ctx)
    if pools and lines:
        sub.trigger(OperationsConvertedToCredit, ctx, operations=sum(n for n, _ in pools), amount=-lines[0].amount,
                    formula=lines[0].formula)
    credits_operations.prorate_grant(sub, ctx, pricing.ai_grant_entitlement(target, seats))
    allotment = credits_operations.operations_for_the_rest(sub, ctx, tier) if tier else None
    set_plan(sub, event, ctx, target, tier, interval, seats, None, unit_price=new_item.unit_price, keep_team=keep_team,
             allotment=allotment, **extra)
    return billing.issue(sub, ctx, bill, plan=target.id)


def upgrade_event(sub: Subscription, ctx: Context, current: Plan, target: Plan,
                  tier: Tier | None) -> tuple[type[PlanSet], dict[str, Any]]:
    """What an upgrade is recorded as, so the audit trail reads right: a trial converted, another
    plan, a bigger tier of the same plan (R16; with the tier it left), or another interval."""
    if current.kind == "trial":
        return TrialConverted, {}
    if target.id != current.id:
        return PlanUpgraded, {}
    old_tier = sub.tier_of(ctx.catalog)
    if tier and old_tier and tier.monthly_operations != old_tier.monthly_operations:
        return TierChanged, {"from_tier": old_tier.operations}
    return IntervalChanged, {}


def downgrade(sub: Subscription, ctx: Context, current: Plan, target: Plan, tier: Tier | None, interval: str,
              seats: int | None, keep_team: str | None) -> ChargeDue | None:
    """R5, R6 and R18's team choice first; then at the period's end with a notice (R17), or at
    once with a new cycle and carried operations (R18), or prorated now; never a refund (R10)."""
    catalog = ctx.catalog
    policy = catalog.policy
    limit = seats if target.per_seat else target.seats
    rules.check_members_fit(sub.members, limit, target.name)
    kept_addon = sub.storage_addon if target.billable else None  # a plan that bills nothing drops it
    rules.check_storage_fits(sub.storage_used, catalog.storage_limit(target, kept_addon), target.name)
    rules.check_team_choice(current, target, keep_team)
    period = sub.period()
    if not current.billable or period is None:
        set_plan(sub, DowngradeApplied, ctx, target, tier, interval, seats, None, keep_team=keep_team)
        return None
    if policy.downgrade_timing == "period_end":
        supersede_schedule(sub, ctx)
        notice_at = max(ctx.at, plus_days(period.end, -policy.downgrade_notice_days))
        sub.trigger(DowngradeScheduled, ctx, plan=target.id, tier=tier.operations if tier else None,
                    interval=interval if target.billable else None, seats=seats, keep_team=keep_team,
                    effective_at=period.end, notice_at=notice_at)
        if notice_at <= ctx.at:
            sub.trigger(DowngradeNoticeDue, ctx, plan=target.id, effective_at=period.end)
        return None
    if policy.downgrade_timing == "immediate_new_cycle" and target.billable:
        pools = credits_operations.unused_operations(sub, ctx)
        carried, _ = pricing.carried_operations(sum(n for n, _ in pools), tier, policy) if tier else (0, 0)
        rate = pricing.lowest_rate(pools)
        due = start_paid(sub, DowngradeApplied, ctx, target, tier, interval, seats, "downgrade", keep_team=keep_team)
        if carried and rate:
            until = plus_days(ctx.at, policy.carry_over_days[interval])  # type: ignore[index]
            sub.trigger(OperationsCarriedOver, ctx, operations=carried, until=until,
                        rate_price=rate.price, rate_operations=rate.operations)
        return due
    if target.billable and interval != sub.interval:
        # another interval restarts the cycle now (R14); unused time becomes billing credit (R10)
        return start_paid(sub, DowngradeApplied, ctx, target, tier, interval, seats, "downgrade", keep_team=keep_team)
    lines = billing.credit_unused(sub, ctx, period, "plan", seats_storage.seats_credited(sub, policy, seats))
    new_item = pricing.plan_item(target, interval, seats, tier)
    if new_item is not None:
        lines.append(pricing.prorated_charge(new_item, period, ctx.at, policy, catalog.currency, "plan_charge"))
    else:
        lines += billing.credit_unused(sub, ctx, period, "addon")  # a free plan drops the add-on too (R22)
    # a free plan bills no next invoice: billed overage goes on a final one with the credit, collected
    # after the move, which never waits on it (R19)
    overage = credits_operations.overage_lines(sub, ctx) if new_item is None else []
    bill = billing.price(sub, ctx, lines + overage, "final" if overage else "downgrade", immediate=not overage)
    credits_operations.overage_billed(sub, ctx, bill)
    supersede_schedule(sub, ctx)
    credits_operations.prorate_grant(sub, ctx, pricing.ai_grant_entitlement(target, seats) if new_item else 0)
    set_plan(sub, DowngradeApplied, ctx, target, tier, interval if new_item else None, seats, None,
             unit_price=new_item.unit_price if new_item else None, keep_team=keep_team)
    if overage:
        billing.issue_and_collect(sub, ctx, bill)
        return None
    return billing.issue(sub, ctx, bill, plan=target.id)


def cancel_change(sub: Subscription, cmd: CancelChange, ctx: Context) -> None:
    """R17: "keep current plan" cancels a scheduled downgrade or cancellation any time before it applies."""
    if not sub.scheduled:
        raise LedgerError("no_scheduled_change", "there is no scheduled change to cancel")
    if sub.scheduled["kind"] == "cancel":
        sub.trigger(CancellationCancelled, ctx, status=standing_without_cancellation(sub))
    else:
        sub.trigger(DowngradeCancelled, ctx, plan=sub.scheduled["plan"])


def cancel(sub: Subscription, cmd: Cancel, ctx: Context) -> None:
    """A paid plan is canceled at the end of the period it was paid for (R10: no refund)."""
    require_subscription(sub)
    if sub.scheduled and sub.scheduled["kind"] == "cancel":
        raise LedgerError("invalid_request", "cancellation is already scheduled")
    period = sub.period()
    plan = sub.plan_of(ctx.catalog)
    if period is None or plan is None or not plan.billable or sub.status == "suspended":
        sub.trigger(SubscriptionCanceled, ctx, plan=sub.plan)  # a suspended plan has nothing paid left to run
        return
    supersede_schedule(sub, ctx)
    sub.trigger(CancellationScheduled, ctx, effective_at=period.end)


def require_subscription(sub: Subscription) -> None:
    if not sub.subscribed:
        raise LedgerError("not_subscribed", "the workspace has no subscription: subscribe first")


def set_contract(sub: Subscription, cmd: SetContract, ctx: Context) -> None:
    """R9: a custom contract takes self-serve changes to sales, who alone set it (R2). A
    downgrade or cancellation scheduled before it is withdrawn: the contract's terms govern the
    plan now, and the customer could neither keep the current plan (cancel-change) nor be held
    to it. A trial ends on its own (R15), so a contract starts from a plan, not from a trial."""
    rules.check_no_pending_charge(sub, purchases_only=True)  # a pending upgrade would land self-serve on it
    if cmd.contract == sub.contract:
        raise LedgerError("invalid_request", f"the contract is already {cmd.contract}" if cmd.contract
                          else "the workspace has no contract to end")
    if cmd.contract and sub.status == "trialing":
        raise LedgerError("not_subscribed", "the workspace is on a trial, which ends on its own (R15): a contract "
                          "starts from a plan, so subscribe it to one first")
    if cmd.contract:
        supersede_schedule(sub, ctx)
    sub.trigger(ContractSet, ctx, contract=cmd.contract)


def standing_without_cancellation(sub: Subscription) -> str:
    """The status once a scheduled cancellation is withdrawn: dunning's suspension stands until
    every open invoice is paid (R8, R19); else an unpaid invoice keeps it past due."""
    if sub.status == "suspended":
        return "suspended"
    return "past_due" if sub.open_invoices() else "active"


def supersede_schedule(sub: Subscription, ctx: Context) -> None:
    if sub.scheduled and sub.scheduled["kind"] == "downgrade":
        sub.trigger(DowngradeCancelled, ctx, plan=sub.scheduled["plan"])
    elif sub.scheduled and sub.scheduled["kind"] == "cancel":
        sub.trigger(CancellationCancelled, ctx, status=standing_without_cancellation(sub))


def set_plan(sub: Subscription, event_class: type[PlanSet], ctx: Context, plan: Plan, tier: Tier | None,
             interval: str | None, seats: int | None, new_period: Period | None, *,
             unit_price: Decimal | None = None, addon_price: Decimal | None = None,
             keep_team: str | None = None, allotment: int | None = None, **extra: Any) -> None:
    """Put the workspace on `plan`; with `new_period` the billing cycle restarts there, without
    it a paid plan keeps the current cycle and a plan that bills nothing has none. A new plan
    price credits the old plan's seats and charges only these seats (R21); without one, seats
    already paid this period stay paid. `allotment`: the operations left for the rest of this
    cycle when the tier changes without a new one (R11, R16)."""
    if new_period is not None:
        start, end = new_period.start, new_period.end
    elif plan.billable:
        start, end = sub.period_start, sub.period_end
    else:
        start = end = None
    if tier is None:
        allotment = 0
    elif allotment is None and new_period:
        allotment = tier.monthly_operations  # else None: unchanged in this cycle
    new_cycle = new_period is not None or not plan.billable
    seats_paid = (seats or 0) if (new_cycle or unit_price is not None) else max(sub.seats_paid, seats or 0)
    sub.trigger(
        event_class, ctx, from_plan=sub.plan, plan=plan.id, tier=tier.operations if tier else None,
        interval=interval, seats=seats, unit_price=unit_price, addon_price=addon_price,
        new_cycle=new_cycle, period_start=start, period_end=end,
        ops_allotment=allotment, kept_team=keep_team, seats_paid=seats_paid, **extra,
    )
    if not plan.ai_credits_per_seat and (sub.ai_granted or sub.ai_grant_at):
        sub.trigger(AICreditsGranted, ctx, credits=0, expired=sub.ai_granted, debt_repaid=0, next_grant_at=None)


def start_paid(sub: Subscription, event_class: type[PlanSet], ctx: Context, plan: Plan, tier: Tier | None,
               interval: str, seats: int | None, purpose: str, keep_team: str | None = None,
               extra: dict[str, Any] | None = None) -> ChargeDue | None:
    """A paid cycle starting now (R14, R15, 004): full charge for the new period, credit for
    what the old plan leaves unused (R13, or unused operations, R16), then the plan, the grants
    and the bill, in that order."""
    rules.check_payment_method(sub, ctx.cause)
    catalog = ctx.catalog
    if plan.per_seat and seats is None:
        seats = max(sub.members, 1)
        rules.check_seats_for_plan(plan, seats, implied=True)
    new_period = period_number(ctx.at, interval, 0)
    item = pricing.plan_item(plan, interval, seats, tier)
    assert item is not None
    addon = pricing.addon_item(catalog, sub.storage_addon, interval)
    charges = [pricing.full_charge(item, new_period, catalog.currency, "plan_charge")]
    if addon:
        charges.append(pricing.full_charge(addon, new_period, catalog.currency, "addon_charge"))
    credits: list[pricing.Line] = []
    converted = 0
    time_credited = False
    old_period = sub.period()
    if old_period and sub.prices:
        if catalog.policy.upgrade_credit == "unused_operations" and sub.tier_of(catalog) and purpose == "upgrade":
            pools = credits_operations.unused_operations(sub, ctx)
            converted = sum(n for n, _ in pools)
            cap = sum((c.amount for c in charges), ZERO)
            line = pricing.operations_credit(pools, cap, catalog.currency, ctx.at)
            credits += [line] if line else []
        elif catalog.policy.upgrade_credit == "unused_time":
            credits += billing.credit_unused(sub, ctx, old_period, "plan",
                                             seats_storage.seats_credited(sub, catalog.policy, seats))
            time_credited = True
        if sub.storage_addon:
            credits += billing.credit_unused(sub, ctx, old_period, "addon")
    charges += credits_operations.overage_lines(sub, ctx)  # the closed cycle's overage (R19)
    bill = billing.price(sub, ctx, credits + charges, purpose)
    credits_operations.overage_billed(sub, ctx, bill)
    supersede_schedule(sub, ctx)
    if converted and credits:
        sub.trigger(OperationsConvertedToCredit, ctx, operations=converted, amount=-credits[0].amount,
                    formula=credits[0].formula)
    if time_credited:
        credits_operations.prorate_grant(sub, ctx, 0)  # the old window ends with the time credited (R23)
    set_plan(sub, event_class, ctx, plan, tier, interval, seats, new_period, unit_price=item.unit_price,
             addon_price=addon.unit_price if addon else None, keep_team=keep_team, **(extra or {}))
    credits_operations.grant_cycle(sub, ctx, plan, reset_operations=False)
    return billing.issue(sub, ctx, bill, plan=plan.id)
