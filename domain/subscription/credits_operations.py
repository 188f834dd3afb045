"""AI credits and operations (R16, R18, R23, R27)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain import pricing, rules
from domain.catalog import Plan, Tier
from domain.commands import BuyAICredits, BuyOperations, ConsumeAICredits, RecordUsage
from domain.errors import LedgerError
from domain.periods import add_months, period_containing
from domain.subscription import billing
from domain.subscription.context import ChargeDue, Context
from domain.subscription.events import (
    AICreditPackBought, AICreditsConsumed, AICreditsGranted, OperationsBought, OperationsReset, OperationsUsed,
)

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def buy_ai_credits(sub: Subscription, cmd: BuyAICredits, ctx: Context) -> ChargeDue | None:
    """R23: a one-time pack, never prorated or refunded, kept until spent; never bought with
    billing credit (R10)."""
    if not sub.subscribed:
        raise LedgerError("invalid_request", "the workspace has no subscription: subscribe first")
    pack = ctx.catalog.credit_pack(cmd.pack)
    if pack is None:
        known = ", ".join(p.id for p in ctx.catalog.credit_packs) or "none"
        raise LedgerError("invalid_request", f"no AI credit pack {cmd.pack!r}; packs: {known}")
    rules.check_payment_method(sub, ctx.cause)
    line = pricing.one_time_charge("ai_credit_pack", pack.name, pack.price, 1, ctx.catalog.currency, ctx.at)
    bill = billing.price(sub, ctx, [line], "ai_credit_pack", use_credit=False)
    sub.trigger(AICreditPackBought, ctx, pack=pack.id, credits=pack.credits, price=pack.price,
                invoice_id=bill.invoice_id)
    return billing.issue(sub, ctx, bill, plan=sub.plan)


def consume_ai_credits(sub: Subscription, cmd: ConsumeAICredits, ctx: Context) -> None:
    """R23: granted credits are spent before purchased ones; never more than the balance."""
    available = sub.ai_granted + sub.ai_purchased
    if cmd.credits > available:
        raise LedgerError("insufficient_credits", f"{cmd.credits} AI credits asked, {available} available")
    from_granted = min(cmd.credits, sub.ai_granted)
    sub.trigger(AICreditsConsumed, ctx, credits=cmd.credits, from_granted=from_granted,
                from_purchased=cmd.credits - from_granted)


def record_usage(sub: Subscription, cmd: RecordUsage, ctx: Context) -> None:
    """Operations used, taken from carried-over, then the allotment, then extra packs (R18, R19)."""
    require_tiered(sub, ctx)
    left = cmd.operations
    parts = []
    for pool in (sub.ops_carried, sub.ops_allotment, sub.ops_extra):
        take = min(left, pool)
        parts.append(take)
        left -= take
    sub.trigger(OperationsUsed, ctx, operations=cmd.operations, from_carried=parts[0],
                from_allotment=parts[1], from_extra=parts[2], overage=left)


def buy_operations(sub: Subscription, cmd: BuyOperations, ctx: Context) -> ChargeDue | None:
    """Extra operations in packs at the tier's price per operation (004); they expire at the
    monthly reset (R18)."""
    if not sub.subscribed:  # a canceled workspace has no plan to buy operations for
        raise LedgerError("invalid_request", "the workspace has no subscription: subscribe first")
    tier = require_tiered(sub, ctx)
    rules.check_no_open_invoice(sub)
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


def unreset_operations(sub: Subscription, ctx: Context) -> int:
    """What a paid annual tier still owes this period: the monthly allotments not yet reset.
    They are unused operations of the tier the price per operation is taken from (R16)."""
    tier = sub.tier_of(ctx.catalog)
    if tier is None or tier.interval != "year" or sub.period_start is None:
        return 0
    month, _ = period_containing(sub.period_start, "month", ctx.at)
    return tier.monthly_operations * max(11 - month, 0)


def grant_cycle(sub: Subscription, ctx: Context, plan: Plan, reset_operations: bool) -> None:
    """A new cycle's grants: subscription AI credits replace what the last cycle left (R23);
    on renewal the operations allotment resets and extra operations expire (R18)."""
    tier = sub.tier_of(ctx.catalog)
    if tier and reset_operations:
        sub.trigger(OperationsReset, ctx, allotment=tier.monthly_operations, expired_extra=sub.ops_extra,
                    next_reset_at=add_months(ctx.at, 1) if sub.interval == "year" else None)
    if plan.ai_credits_per_seat:
        credits = plan.ai_credits_per_seat * (sub.seats or 1)
        sub.trigger(AICreditsGranted, ctx, credits=credits, expired=sub.ai_granted)
