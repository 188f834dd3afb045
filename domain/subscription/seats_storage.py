"""Seats, members and storage (R5, R6, R21, R22, R24)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain import pricing, rules
from domain.catalog import Policy
from domain.commands import ReportStorage, SetMembers, SetSeats, SetStorageAddon
from domain.errors import LedgerError
from domain.subscription import billing, credits_operations
from domain.subscription.context import ChargeDue, Context
from domain.subscription.events import MembersChanged, SeatsChanged, StorageAddonChanged, StorageUsageReported

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def _require_subscription(sub: Subscription) -> None:
    if not sub.subscribed:
        raise LedgerError("not_subscribed", "the workspace has no subscription: subscribe first")


def seats_credited(sub: Subscription, policy: Policy, new_seats: int | None) -> int:
    """R21: how many seats a plan change credits for unused time. Only what the policy keeps
    paid: a seat removed without a credit stays paid until the period ends (it may be added
    back for free), so it is credited only as far as it moves into the new plan, never turned
    into billing credit by an upgrade or a downgrade."""
    held = sub.seats_held(policy)
    if policy.seat_removal_credit:
        return held
    return min(held, max(sub.seats or 0, new_seats or 0))


def set_seats(sub: Subscription, cmd: SetSeats, ctx: Context) -> ChargeDue | None:
    """R21: added seats are charged prorated for the rest of the period; removed seats lower the
    next period's quantity, with a prorated credit only where the policy says so. R5: never
    fewer seats than active members."""
    _require_subscription(sub)
    rules.check_no_open_invoice(sub)
    plan = sub.plan_of(ctx.catalog)
    if plan is None or not plan.per_seat or not plan.billable:
        raise LedgerError("invalid_request", f"{plan.name if plan else 'this plan'} is not billed per seat")
    rules.check_seats_for_plan(plan, cmd.seats)
    if cmd.seats == sub.seats:
        raise LedgerError("invalid_request", f"the workspace already has {cmd.seats} seats")
    rules.check_members_fit(sub.members, cmd.seats, plan.name)
    period, policy, currency = sub.period(), ctx.catalog.policy, ctx.catalog.currency
    assert period is not None and sub.interval is not None
    unit = sub.prices.get("plan", plan.prices[sub.interval])
    added = cmd.seats - sub.seats_held(policy)
    removed = (sub.seats or 0) - cmd.seats if policy.seat_removal_credit else 0
    line, changes = None, None
    if added > 0 or removed > 0:
        what = f"{plan.name}: {added} added seat(s)" if added > 0 else f"{plan.name}: {removed} removed seat(s)"
        item = pricing.Priced("plan", what, unit, max(added, removed))
        line, changes = pricing.seat_change(item, added <= 0, period, ctx.at, policy, currency, sub.seat_changes(),
                                            sub.charged_net("plan"))
    bill = billing.price(sub, ctx, [line], "seats") if line else None
    if line and line.kind == "seat_credit":
        credits_operations.prorate_grant(sub, ctx, pricing.ai_grant_entitlement(plan, cmd.seats))  # R23
    sub.trigger(SeatsChanged, ctx, seats=cmd.seats, previous=sub.seats, unit_price=unit,
                scheduled_seats=scheduled_seats(sub, ctx, cmd.seats),
                seat_changes_exact=changes.exact if changes else None,
                seat_changes_billed=changes.billed if changes else None)
    return billing.issue(sub, ctx, bill, plan=plan.id) if bill else None


def scheduled_seats(sub: Subscription, ctx: Context, seats: int) -> int | None:
    """R17, R21: a per-seat downgrade scheduled for the period end starts with the seats held at
    the boundary: a seat count chosen after scheduling it is the next period's quantity, so the
    schedule follows it (within the target's max_seats). Members who joined without seats being
    bought are not counted for them: the new plan shows the R24 over-seat warning instead."""
    if not sub.scheduled or sub.scheduled["kind"] != "downgrade":
        return None
    target = ctx.catalog.plan(sub.scheduled["plan"] or "")
    if target is None or not target.per_seat:
        return None
    return min(seats, target.max_seats)


def set_members(sub: Subscription, cmd: SetMembers, ctx: Context) -> None:
    """Members are a fact, never refused: above the seats they raise the R24 warning."""
    sub.trigger(MembersChanged, ctx, members=cmd.members, previous=sub.members)


def report_storage(sub: Subscription, cmd: ReportStorage, ctx: Context) -> None:
    """Storage used is a fact (R6 and R19 read it)."""
    sub.trigger(StorageUsageReported, ctx, gb=cmd.gb)


def set_storage_addon(sub: Subscription, cmd: SetStorageAddon, ctx: Context) -> ChargeDue | None:
    """R22: a recurring storage add-on, prorated on change; R6: never below the storage used."""
    _require_subscription(sub)
    rules.check_no_open_invoice(sub)
    catalog = ctx.catalog
    plan = sub.plan_of(catalog)
    if plan is None or not plan.billable:
        raise LedgerError("invalid_request", "storage add-ons need a paid plan")
    if cmd.addon is not None and catalog.addon(cmd.addon) is None:
        known = ", ".join(a.id for a in catalog.addons) or "none"
        raise LedgerError("invalid_request", f"no storage add-on {cmd.addon!r}; add-ons: {known}")
    if cmd.addon == sub.storage_addon:
        raise LedgerError("invalid_request", f"the storage add-on is already {cmd.addon}" if cmd.addon
                          else "the workspace has no storage add-on to remove")
    addon = catalog.addon(cmd.addon) if cmd.addon else None
    rules.check_storage_fits(sub.storage_used, catalog.storage_limit(plan, cmd.addon),
                             f"{plan.name} with {addon.name}" if addon else f"{plan.name} without a storage add-on")
    period = sub.period()
    assert period is not None
    lines = billing.credit_unused(sub, ctx, period, "addon")
    item = pricing.addon_item(catalog, cmd.addon, sub.interval or "month")
    if item:
        lines.append(pricing.prorated_charge(item, period, ctx.at, catalog.policy, catalog.currency, "addon_charge"))
    bill = billing.price(sub, ctx, lines, "storage_addon") if lines else None
    sub.trigger(StorageAddonChanged, ctx, addon=cmd.addon, previous=sub.storage_addon,
                unit_price=item.unit_price if item else None)
    return billing.issue(sub, ctx, bill, plan=plan.id) if bill else None
