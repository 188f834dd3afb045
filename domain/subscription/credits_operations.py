"""AI credits and operations (R16, R18, R23, R27).

Subscription AI credits (R23) are granted per grant window: the billing period, or each month
of it (policy `ai_grant_cadence = "month"`, the default, so annual plans grant monthly as
operations reset monthly). A window is worth what was paid for it: when a change credits back
the unused time of the plan (a downgrade, a seat removal credited by policy, a new cycle), the
rest of the window is re-valued at the new rate; the unspent grant goes back with it, and
credits already spent beyond the window's new worth are a debt taken from the next grants.
So a round trip (month -> year -> month on one day) is worth nothing: each cycle credited back
in full takes its grant with it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from domain import pricing, rules
from domain.catalog import Plan, Tier
from domain.commands import BuyAICredits, BuyOperations, ConsumeAICredits, RecordUsage
from domain.errors import LedgerError
from domain.periods import Period, add_months, period_containing
from domain.subscription import billing, operations_pools
from domain.subscription.context import ChargeDue, Context
from domain.subscription.usage_events import (
    AICreditPackBought, AICreditsConsumed, AICreditsGranted, AICreditsProrated, OperationsBought,
    OperationsOverageBilled, OperationsReset, OperationsUsed,
)

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def buy_ai_credits(sub: Subscription, cmd: BuyAICredits, ctx: Context) -> ChargeDue | None:
    """R23: a one-time pack, never prorated or refunded, kept until spent; never bought with
    billing credit (R10)."""
    if not sub.subscribed:
        raise LedgerError("not_subscribed", "the workspace has no subscription: subscribe first")
    pack = ctx.catalog.credit_pack(cmd.pack)
    if pack is None:
        known = ", ".join(p.id for p in ctx.catalog.credit_packs) or "none"
        raise LedgerError("invalid_request", f"no AI credit pack {cmd.pack!r}; packs: {known}")
    rules.check_not_suspended(sub, "buy AI credits")
    rules.check_no_open_invoice(sub, "buying AI credits")
    rules.check_payment_method(sub, ctx.cause)
    line = pricing.one_time_charge("ai_credit_pack", pack.name, pack.price, 1, ctx.catalog.currency, ctx.at)
    bill = billing.price(sub, ctx, [line], "ai_credit_pack", use_credit=False)
    sub.trigger(AICreditPackBought, ctx, pack=pack.id, credits=pack.credits, price=pack.price,
                invoice_id=bill.invoice_id)
    return billing.issue(sub, ctx, bill, plan=sub.plan)


def consume_ai_credits(sub: Subscription, cmd: ConsumeAICredits, ctx: Context) -> None:
    """R23: granted credits are spent before purchased ones; never more than the balance."""
    rules.check_not_suspended(sub, "use AI credits")
    available = sub.ai_granted + sub.ai_purchased
    if cmd.credits > available:
        raise LedgerError("insufficient_credits", f"{cmd.credits} AI credits asked, {available} available")
    from_granted = min(cmd.credits, sub.ai_granted)
    sub.trigger(AICreditsConsumed, ctx, credits=cmd.credits, from_granted=from_granted,
                from_purchased=cmd.credits - from_granted)


def record_usage(sub: Subscription, cmd: RecordUsage, ctx: Context) -> None:
    """Operations used, taken from carried-over, then the allotment, then extra packs (R18, R19).
    Beyond them the catalog's `overage` policy decides: `block` refuses the report (what was
    already received still counts), `bill` records the overage to be charged on the next invoice
    at the plan's price per operation, `allow` records it and charges nothing."""
    tier = require_tiered(sub, ctx)
    rules.check_not_suspended(sub, "run operations")
    parts, left = operations_pools.take(sub, cmd.operations)
    policy = ctx.catalog.policy.overage
    if left and policy == "block":
        plan = sub.plan_of(ctx.catalog)
        raise LedgerError("operations_limit_exceeded",
                          f"{cmd.operations:,} operations exceed the {sub.operations_remaining:,} left on "
                          f"{plan.name if plan else 'this plan'}: buy extra operations or upgrade")
    rate = operations_pools.billed_rate(tier, left, policy)
    sub.trigger(OperationsUsed, ctx, operations=cmd.operations, from_carried=parts[0],
                from_allotment=parts[1], from_extra=parts[2], overage=left,
                billed_rate_price=rate.price if rate else None, billed_rate_operations=rate.operations if rate else None)


def overage_lines(sub: Subscription, ctx: Context) -> list[pricing.Line]:
    """R19, policy `overage = "bill"`: the operations used beyond the allowance and not billed
    yet, as their own line of the next invoice (a renewal, a new cycle, a final invoice)."""
    if not sub.ops_overage:
        return []
    pools = [(p["operations"], pricing.Rate(p["rate"]["price"], p["rate"]["operations"])) for p in sub.ops_overage]
    return [pricing.operations_overage_charge(pools, ctx.catalog.currency, ctx.at)]


def overage_billed(sub: Subscription, ctx: Context, bill: billing.Bill) -> None:
    """Record that `bill` carries the overage line (before the invoice itself, as a purchase is)."""
    for line in bill.lines:
        if line.kind == "operations_overage":
            sub.trigger(OperationsOverageBilled, ctx, operations=line.quantity, amount=line.amount,
                        invoice_id=bill.invoice_id)


def final_invoice(sub: Subscription, ctx: Context) -> None:
    """What is still owed when billing ends (a cancel, a move to a free plan: operations billed as
    overage, R19) is invoiced and its collection requested, dunning if it fails; nothing else is
    (R10: no refund, no new period). The plan change never waits on it."""
    lines = overage_lines(sub, ctx)
    if lines:
        bill = billing.price(sub, ctx, lines, "final", immediate=False)
        overage_billed(sub, ctx, bill)
        billing.issue_and_collect(sub, ctx, bill)


def buy_operations(sub: Subscription, cmd: BuyOperations, ctx: Context) -> ChargeDue | None:
    """Extra operations in packs at the tier's price per operation (004); they expire at the
    monthly reset (R18)."""
    if not sub.subscribed:  # a canceled workspace has no plan to buy operations for
        raise LedgerError("not_subscribed", "the workspace has no subscription: subscribe first")
    tier = require_tiered(sub, ctx)
    rules.check_no_open_invoice(sub, "buying operations")
    pack = ctx.catalog.policy.operations_pack
    if cmd.operations % pack:
        raise LedgerError("invalid_request", f"extra operations are sold in packs of {pack:,}")
    rules.check_payment_method(sub, ctx.cause)
    line = pricing.operations_pack_charge(cmd.operations, pricing.Rate.of(tier), ctx.catalog.currency, ctx.at)
    bill = billing.price(sub, ctx, [line], "operations")
    sub.trigger(OperationsBought, ctx, operations=cmd.operations, price=line.amount, invoice_id=bill.invoice_id)
    return billing.issue(sub, ctx, bill, plan=sub.plan)


def require_tiered(sub: Subscription, ctx: Context) -> Tier:
    tier = sub.tier_of(ctx.catalog)
    if tier is None:
        raise LedgerError("invalid_request", "operations apply only to plans with operation tiers")
    return tier


def unused_operations(sub: Subscription, ctx: Context) -> list[tuple[int, pricing.Rate]]:
    """R16: unused operations by the rate they were paid at: this tier's (allotment, extra packs
    and months not yet reset) and the carried-over ones at the rate they came with."""
    tier = sub.tier_of(ctx.catalog)
    if tier is None:
        return []
    own = sub.ops_allotment + sub.ops_extra + unreset_operations(sub, ctx)
    pools = [(own, pricing.Rate.of(tier))]
    if sub.ops_carried:
        rate = sub.ops_carried_rate
        pools.append((sub.ops_carried, pricing.Rate(rate["price"], rate["operations"]) if rate else pools[0][1]))
    return pools


def operations_for_the_rest(sub: Subscription, ctx: Context, tier: Tier) -> int:
    """R11, R16: a tier upgrade that keeps the cycle raises the limit at once: the new tier's
    monthly operations for the rest of this month (or monthly period), priced as its charge is.
    What the old tier left was credited (unused operations or unused time)."""
    period = sub.period()
    assert period is not None
    window = period_containing(period.start, "month", ctx.at)[1] if tier.interval == "year" else period
    return pricing.prorated_operations(tier.monthly_operations, window, ctx.at, ctx.catalog.policy)


def unreset_operations(sub: Subscription, ctx: Context) -> int:
    """What a paid annual tier still owes this period: the monthly allotments not yet reset.
    They are unused operations of the tier the price per operation is taken from (R16)."""
    tier = sub.tier_of(ctx.catalog)
    if tier is None or tier.interval != "year" or sub.period_start is None:
        return 0
    month, _ = period_containing(sub.period_start, "month", ctx.at)
    return tier.monthly_operations * max(11 - month, 0)


def grant_cycle(sub: Subscription, ctx: Context, plan: Plan, reset_operations: bool) -> None:
    """A new cycle's grants: on renewal the operations allotment resets and extra operations
    expire (R18); a grant window opens (R23)."""
    tier = sub.tier_of(ctx.catalog)
    if tier and reset_operations:
        sub.trigger(OperationsReset, ctx, allotment=tier.monthly_operations, expired_extra=sub.ops_extra,
                    next_reset_at=add_months(ctx.at, 1) if sub.interval == "year" else None)
    grant_ai_credits(sub, ctx, plan)


def grant_ai_credits(sub: Subscription, ctx: Context, plan: Plan) -> None:
    """R23: a grant window opens at ctx.at with the plan's credits for the seats held; they
    replace what the last window left, and repay any credit debt first. Inside an annual period
    on the monthly cadence the next window opens a month on (anchored on the period's start)."""
    credits = pricing.ai_grant_entitlement(plan, sub.seats)
    if not credits:
        return
    repaid = min(sub.ai_debt, credits)
    sub.trigger(AICreditsGranted, ctx, credits=credits - repaid, expired=sub.ai_granted, debt_repaid=repaid,
                next_grant_at=_next_grant_at(sub, ctx))


def _next_grant_at(sub: Subscription, ctx: Context) -> datetime | None:
    if ctx.catalog.policy.ai_grant_cadence != "month" or sub.interval != "year" or sub.period_start is None:
        return None
    _, month = period_containing(sub.period_start, "month", ctx.at)
    return month.end if sub.period_end and month.end < sub.period_end else None


def grant_window(sub: Subscription, ctx: Context) -> Period | None:
    """The grant window containing ctx.at: the period, or its month on the monthly cadence (R23)."""
    period = sub.period()
    if period is None or ctx.at < period.start:
        return period
    if ctx.catalog.policy.ai_grant_cadence == "month" and sub.interval == "year":
        return period_containing(period.start, "month", ctx.at)[1]
    return period


def prorate_grant(sub: Subscription, ctx: Context, new_rate: int) -> None:
    """R23: the rest of the grant window is now paid at `new_rate` credits a window (0 when a
    new cycle ends it). A lower rate lowers the window's worth (pricing.prorated_grant_worth):
    the unspent grant gives back the difference, and what was already spent beyond it is a
    debt. A higher rate changes only future grants."""
    if new_rate >= sub.ai_rate:
        return
    window = grant_window(sub, ctx)
    if window is None:
        return
    worth, formula = pricing.prorated_grant_worth(sub.ai_worth, sub.ai_rate, new_rate, window, ctx.at,
                                                  ctx.catalog.policy)
    excess = sub.ai_worth - worth
    withdrawn = min(sub.ai_granted, excess)
    sub.trigger(AICreditsProrated, ctx, worth=worth, rate=new_rate, withdrawn=withdrawn, debt=excess - withdrawn,
                formula=formula)
