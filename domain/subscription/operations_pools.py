"""Where reported operations are taken from (R18, R19), and the reports that came in while a
charge held a change to the operations pools (R11, R16).

A held change (an upgrade awaiting the customer's 3-D Secure, or a charge whose outcome is not
known yet) was priced on the pools as they stood when it was requested: its facts credit what
was unused then, bill the overage then, and set the new tier's pools. Reports accepted while it
waited were taken from the old pools. When the change is paid, those reports are counted again
after it (OperationsRecounted), as if it had been paid at once, as a card that needs no
authentication would have it: operations used are never credited as unused, and overage is
never dropped unbilled. A change that is declined or abandoned leaves the reports where they are.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from domain import pricing
from domain.catalog import Tier
from domain.subscription.usage_events import OperationsRecounted, add_overage

if TYPE_CHECKING:
    from domain.subscription.aggregate import PendingCharge, Subscription
    from domain.subscription.context import Context


def take(sub: Subscription, operations: int) -> tuple[list[int], int]:
    """`operations` taken from the carried-over pool, then the allotment, then extra packs: what
    each gives, and what is left beyond them (the overage)."""
    left = operations
    parts = []
    for pool in (sub.ops_carried, sub.ops_allotment, sub.ops_extra):
        given = min(left, pool)
        parts.append(given)
        left -= given
    return parts, left


def billed_rate(tier: Tier | None, overage: int, policy: str) -> pricing.Rate | None:
    """The rate overage is billed at: the plan's price per operation with policy `overage = "bill"`."""
    return pricing.Rate.of(tier) if tier and overage and policy == "bill" else None


def apply_held(sub: Subscription, pending: PendingCharge, held: list[tuple[type[Any], dict[str, Any]]],
               ctx: Context, meta: dict[str, Any]) -> None:
    """Record `held` (the paid change's facts), then count the operations reported while it waited
    against the pools it set up. The pools the change was priced on are the ones now plus what
    the reports took; the change's facts are applied to those on a copy, then the reports taken
    again (never refused: R19, usage received counts). `meta`: the settlement's."""
    reported = pending.get("ops_reported")
    target = _after(sub, reported, held, ctx) if reported else None
    for cls, fields in held:
        sub.trigger_event(cls, **fields)
    if target is None or target["pools"] == [sub.ops_carried, sub.ops_allotment, sub.ops_extra, sub.ops_overage]:
        return  # the change left the pools the reports came from: they stand as taken
    carried, allotment, extra, overage = target["pools"]
    sub.trigger_event(OperationsRecounted, **meta, invoice_id=pending["invoice_id"], **target["taken"],
                      carried=carried, allotment=allotment, extra=extra, unbilled_overage=overage)


def _after(sub: Subscription, reported: dict[str, Any], held: list[tuple[type[Any], dict[str, Any]]],
           ctx: Context) -> dict[str, Any]:
    """The pools the held change leaves, then the reports taken from them, on a copy of `sub`."""
    before = copy.deepcopy(sub)
    before._pending_events = []
    before.ops_carried = sub.ops_carried + reported["carried"]
    before.ops_allotment = sub.ops_allotment + reported["allotment"]
    before.ops_extra = sub.ops_extra + reported["extra"]
    before.ops_overage = _without(before.ops_overage, reported["overage"])
    for cls, fields in held:
        before.trigger_event(cls, **fields)
    parts, overage = take(before, reported["operations"])
    rate = billed_rate(before.tier_of(ctx.catalog), overage, ctx.catalog.policy.overage)
    unbilled = copy.deepcopy(before.ops_overage)
    if rate is not None:
        add_overage(unbilled, overage, {"price": rate.price, "operations": rate.operations})
    return {"pools": [before.ops_carried - parts[0], before.ops_allotment - parts[1], before.ops_extra - parts[2],
                      unbilled],
            "taken": {"operations": reported["operations"], "from_carried": parts[0], "from_allotment": parts[1],
                      "from_extra": parts[2], "overage": overage}}


def _without(pools: list[dict[str, Any]], taken: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pools = copy.deepcopy(pools)
    for t in taken:
        found = next((p for p in pools if p["rate"] == t["rate"]), None)
        if found is not None:
            found["operations"] -= min(found["operations"], t["operations"])
    return [p for p in pools if p["operations"]]
