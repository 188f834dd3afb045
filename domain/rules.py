"""Preconditions of RULES.md: each check raises LedgerError before anything is recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from domain.catalog import Catalog, Plan, Tier
from domain.commands import Actor, Command
from domain.errors import LedgerError
from domain.text import plural

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


def check_actor(actor: Actor, command: Command) -> None:
    """R2: only workspace admins and billing admins change plan, seats, interval or add-ons.
    R9: only sales sets or lifts a contract; the workspace's admins it sends to sales may not."""
    if command.sales_only:
        if actor.role not in ("sales", "system"):
            raise LedgerError("not_authorized", f"{actor.role} {actor.id} may not {command.name}: a custom contract is "
                              "set and lifted by sales (R9): contact sales")
        return
    if command.billing_change and not actor.is_billing_admin:
        raise LedgerError(
            "not_authorized",
            f"{actor.role} {actor.id} may not {command.name}: ask a workspace admin or billing admin",
        )


def check_no_contract(sub: Subscription) -> None:
    """R9: a custom contract takes every self-serve plan, seat, interval and add-on change to sales."""
    if sub.contract:
        raise LedgerError(
            "contact_sales",
            f"this workspace is on {article(sub.contract)} {sub.contract} contract: "
            "contact sales to change plan, seats or add-ons",
        )


def article(word: str) -> str:
    """'an enterprise', 'an education', but 'a university', 'a campus' (the contract kinds)."""
    return "an" if word[:1].lower() in "aeio" else "a"


def check_no_open_invoice(sub: Subscription, what: str = "changing the plan") -> None:
    """R8, R20: an open invoice blocks plan changes and purchases (a downgrade is no way around a
    failed payment, nor is a pack bought on a card that failed)."""
    if sub.open_invoice:
        raise LedgerError(
            "open_invoice",
            f"invoice {sub.open_invoice} is open: pay it (pay-invoice) before {what}",
        )


def check_not_suspended(sub: Subscription, what: str) -> None:
    """R19: a workspace suspended by dunning has its paid features locked until it pays."""
    if sub.status == "suspended":
        raise LedgerError("workspace_suspended",
                          f"the workspace is suspended for an unpaid invoice: pay it (pay-invoice) to {what} again")


def check_may_decide(sub: Subscription, actor: Actor, command: Command, *, bills: bool) -> None:
    """Before a command is decided: who may give it (R2); a change that `bills` is sales' under a
    contract (R9); and it, or one that waits for pending money (pay-invoice), is not decided on top
    of a charge awaiting its outcome (R12)."""
    check_actor(actor, command)
    if bills:
        check_no_contract(sub)
    if bills or command.waits_for_pending:
        check_no_pending_charge(sub)


def check_no_pending_charge(sub: Subscription, *, purchases_only: bool = False) -> None:
    """R12: while a charge awaits its outcome, nothing else that bills may be decided on top of it;
    `purchases_only`: only a charge holding what it buys (a renewal's collection changes no plan)."""
    waiting = [(i, p) for i, p in sub.pending_charges.items() if p["effects"] or not purchases_only]
    if waiting:
        invoice_id, pending = waiting[0]
        waiting = "the customer's authentication (3-D Secure)" if pending["action_required"] else "the payment provider"
        raise LedgerError(
            "payment_pending",
            f"a payment of {pending['amount']} {pending['currency']} for invoice {invoice_id} is waiting for "
            f"{waiting}: it must be confirmed or abandoned before another billing change",
        )


def resolve_plan(catalog: Catalog, plan_id: str) -> Plan:
    plan = catalog.plan(plan_id)
    if plan is None:
        known = ", ".join(p.id for p in catalog.plans)
        raise LedgerError("unknown_plan", f"no plan {plan_id!r} in catalog {catalog.id}; plans: {known}")
    if plan.kind == "contract":
        raise LedgerError("contact_sales", f"{plan.name} is sold by contract: contact sales")
    return plan


def resolve_tier(plan: Plan, tier: int | None, interval: str) -> Tier | None:
    if not plan.tiers:
        if tier is not None:
            raise LedgerError("invalid_request", f"{plan.name} has no operation tiers")
        if plan.billable and interval not in plan.prices:
            raise LedgerError("invalid_request", f"{plan.name} is not sold {interval}ly")
        return None
    if tier is None:
        raise LedgerError("invalid_request", f"{plan.name} needs a tier (operations per {interval})")
    found = plan.tier(tier, interval)
    if found is None:
        options = ", ".join(f"{t.operations}" for t in plan.tiers if t.interval == interval)
        raise LedgerError("invalid_request", f"{plan.name} has no {tier:,}-operation {interval}ly tier; tiers: {options}")
    return found


def check_seats_for_plan(plan: Plan, seats: int | None, *, implied: bool = False) -> None:
    """Seats asked for, or `implied` (a change or subscription that names none keeps the seats
    paid for now, or takes one per active member): never more than the plan sells."""
    if seats is not None and not plan.per_seat:
        raise LedgerError("invalid_request", f"{plan.name} is not billed per seat: seats cannot be set")
    if seats is not None and seats > plan.max_seats:
        why = (f", and this change names no seat count, so it would take {seats:,} (the seats paid for now, or one "
               "per active member): name the seats wanted") if implied else ""
        raise LedgerError("invalid_request", f"{plan.name} sells at most {plan.max_seats:,} seats{why}")


def check_members_fit(members: int, seat_limit: int | None, target: str) -> None:
    """R5: members above the target's seat limit block a downgrade or a seat reduction."""
    if seat_limit is not None and members > seat_limit:
        raise LedgerError(
            "seat_limit_exceeded",
            f"{plural(members, 'active member')} exceed{'s' if members == 1 else ''} the "
            f"{plural(seat_limit, 'seat')} of {target}: remove members first",
        )


def check_storage_fits(used: Decimal, limit: int, target: str) -> None:
    """R6: storage used above the target's storage (add-ons included) blocks the change."""
    if used > limit:
        raise LedgerError(
            "storage_limit_exceeded",
            f"{used} GB used exceeds the {limit} GB of {target}: free space or keep a storage add-on",
        )


DOING = {
    "subscribe": "subscribing", "change-plan": "upgrading", "set-seats": "adding seats",
    "set-storage-addon": "adding a storage add-on", "buy-ai-credits": "buying AI credits",
    "buy-operations": "buying operations", "pay-invoice": "paying the invoice",
}
"""What a command that needs money is doing, for the message that asks for a payment method."""


def check_payment_method(sub: Subscription, command: str = "change-plan") -> None:
    """R7: an upgrade to a paid plan (any charge now) needs a payment method on file."""
    if not sub.payment_methods:
        raise LedgerError("payment_method_required",
                          f"add a payment method before {DOING.get(command, 'paying')}")


def check_team_choice(current: Plan, target: Plan, keep_team: str | None) -> None:
    """R18: moving to a plan that allows one team requires naming the team to keep."""
    if target.teams == 1 and (current.teams is None or current.teams > 1) and not keep_team:
        raise LedgerError("team_choice_required", f"{target.name} allows one team: choose the team to keep (keep_team)")
