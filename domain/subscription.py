"""The Subscription aggregate: one per workspace. It decides, then records facts.

Every command method runs all its checks (domain/rules.py) and prices the change
(domain/pricing.py) before it triggers a single event, so a refusal records
nothing. Events are past-tense facts that carry who, when, through which channel
and why, plus the prices and catalog version they used.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from domain import events, pricing, rules
from domain.catalog import Catalog, Plan, Policy, Tier
from domain.commands import (
    SYSTEM, Actor, AddPaymentMethod, BuyAICredits, BuyOperations, Cancel, CancelChange, ChangePlan,
    Command, ConsumeAICredits, PayInvoice, RecordUsage, RemovePaymentMethod, ReportStorage, SetContract,
    SetMembers, SetSeats, SetStorageAddon, Subscribe,
)
from domain.errors import LedgerError
from domain.money import ZERO
from domain.payments import ChargeResult, PaymentGateway
from domain.periods import Period, add_months, period_containing, period_number, plus_days

NAMESPACE = uuid.UUID("6d1b3c52-64f5-4c4e-9f0e-5b1a2f0c9e10")
MAX_DUE_STEPS = 5000


def workspace_uuid(workspace_id: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, workspace_id)


def charge_declined(amount: Decimal, decline_code: str) -> LedgerError:
    """An immediate charge declined: refused, nothing changed but the fact (R12). A replay of
    the command by its idempotency key returns this same refusal."""
    return LedgerError("payment_failed", f"payment of {amount} declined ({decline_code}): nothing changed")


def payment_failed(amount: Decimal, message: str) -> LedgerError:
    """A declined payment of an open invoice: the invoice stays open and keeps blocking plan changes (R8)."""
    return LedgerError("payment_failed", f"payment of {amount} declined: {message}")


@dataclass(frozen=True)
class Context:
    """Who asks, when, through which channel and why; the catalog and the payment port."""

    actor: Actor
    channel: str
    at: datetime
    catalog: Catalog
    payments: PaymentGateway
    cause: str
    reason: str | None = None
    idempotency_key: str | None = None
    args_hash: str | None = None

    def system(self, at: datetime, cause: str) -> Context:
        return Context(SYSTEM, "scheduler", at, self.catalog, self.payments, cause)

    def meta(self) -> dict[str, Any]:
        return {
            "timestamp": self.at,
            "actor_id": self.actor.id,
            "actor_role": self.actor.role,
            "channel": self.channel,
            "cause": self.cause,
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
            "args_hash": self.args_hash,
            "catalog_version": f"{self.catalog.id}@{self.catalog.version}",
        }


@dataclass(frozen=True)
class Bill:
    """A priced and collected bill, ready to be recorded as events."""

    invoice_id: str
    lines: list[pricing.Line]
    totals: pricing.Totals
    purpose: str
    charge_id: str | None
    payment_method: str | None
    declined: str | None = None
    decline_message: str = ""


class Subscription(Aggregate):
    """A workspace's subscription. State is plain data so snapshots stay transcodable."""

    # The facts it records (domain/events.py), also reachable as Subscription.PlanUpgraded etc.
    Event = events.Event
    WorkspaceRegistered = events.WorkspaceRegistered
    PlanSet = events.PlanSet
    Subscribed = events.Subscribed
    TrialStarted = events.TrialStarted
    TrialConverted = events.TrialConverted
    TrialExpired = events.TrialExpired
    PlanUpgraded = events.PlanUpgraded
    IntervalChanged = events.IntervalChanged
    DowngradeApplied = events.DowngradeApplied
    DowngradeScheduled = events.DowngradeScheduled
    DowngradeCancelled = events.DowngradeCancelled
    DowngradeNoticeDue = events.DowngradeNoticeDue
    CancellationScheduled = events.CancellationScheduled
    CancellationCancelled = events.CancellationCancelled
    SubscriptionCanceled = events.SubscriptionCanceled
    PeriodRenewed = events.PeriodRenewed
    SeatsChanged = events.SeatsChanged
    MembersChanged = events.MembersChanged
    StorageUsageReported = events.StorageUsageReported
    StorageAddonChanged = events.StorageAddonChanged
    AICreditPackBought = events.AICreditPackBought
    AICreditsGranted = events.AICreditsGranted
    AICreditsConsumed = events.AICreditsConsumed
    OperationsUsed = events.OperationsUsed
    OperationsBought = events.OperationsBought
    OperationsCarriedOver = events.OperationsCarriedOver
    OperationsConvertedToCredit = events.OperationsConvertedToCredit
    OperationsReset = events.OperationsReset
    OperationsExpired = events.OperationsExpired
    InvoiceIssued = events.InvoiceIssued
    BillingCreditIssued = events.BillingCreditIssued
    BillingCreditApplied = events.BillingCreditApplied
    PaymentSucceeded = events.PaymentSucceeded
    PaymentFailed = events.PaymentFailed
    ChargeDeclined = events.ChargeDeclined
    UpgradePaymentFailed = events.UpgradePaymentFailed
    PaymentMethodAdded = events.PaymentMethodAdded
    PaymentMethodRemoved = events.PaymentMethodRemoved
    ContractSet = events.ContractSet

    # ------------------------------------------------------------- state views

    def open_invoices(self) -> list[str]:
        return [i for i, inv in self.invoices.items() if inv["status"] == "open"]

    @property
    def open_invoice(self) -> str | None:
        found = self.open_invoices()
        return found[0] if found else None

    @property
    def default_payment_method(self) -> str | None:
        return self.payment_methods[-1] if self.payment_methods else None

    @property
    def subscribed(self) -> bool:
        return self.status not in ("none", "canceled")

    def plan_of(self, catalog: Catalog) -> Plan | None:
        return catalog.plan(self.plan) if self.plan else None

    def tier_of(self, catalog: Catalog) -> Tier | None:
        plan = self.plan_of(catalog)
        return plan.tier(self.tier, self.interval) if plan and self.tier else None

    def seat_limit(self, catalog: Catalog) -> int | None:
        plan = self.plan_of(catalog)
        if plan is None:
            return None
        return self.seats if plan.per_seat else plan.seats

    def storage_limit(self, catalog: Catalog) -> int:
        return catalog.storage_limit(self.plan_of(catalog), self.storage_addon)

    @property
    def operations_remaining(self) -> int:
        return self.ops_allotment + self.ops_extra + self.ops_carried

    def period(self) -> Period | None:
        if self.period_start and self.period_end:
            return Period(self.period_start, self.period_end)
        return None

    def charged_net(self, item: str) -> Decimal:
        if not self.period_end:
            return ZERO
        return self.charged.get(f"{item}@{self.period_end.isoformat()}", ZERO)

    def seats_held(self, policy: Policy) -> int:
        """Seats paid for this period and not credited back: a seat removed without a credit
        stays paid until the period ends (R21); one credited back (policy) must be bought again."""
        if policy.seat_removal_credit:
            return self.seats or 0
        return max(self.seats or 0, self.seats_paid)

    def current_item(self, catalog: Catalog) -> pricing.Priced | None:
        """The plan as paid for this period: the unit price recorded when it was bought, for
        every seat paid this period (seats removed mid-period were still paid for, R21)."""
        plan = self.plan_of(catalog)
        if plan is None or "plan" not in self.prices:
            return None
        paid_seats = self.seats_held(catalog.policy) or None
        base = pricing.plan_item(plan, self.interval or "month", paid_seats, self.tier_of(catalog))
        return pricing.Priced("plan", base.description, self.prices["plan"], base.quantity) if base else None

    def current_addon(self, catalog: Catalog) -> pricing.Priced | None:
        base = pricing.addon_item(catalog, self.storage_addon, self.interval or "month")
        if base is None or "addon" not in self.prices:
            return None
        return pricing.Priced("addon", base.description, self.prices["addon"], 1)

    def idempotent_result(self, key: str, args_hash: str) -> tuple[int, int] | None:
        """The versions a key already produced, or None; the key with other arguments is refused."""
        entry = self.idempotency.get(key)
        if entry is None:
            return None
        if entry["hash"] != args_hash:
            raise LedgerError("idempotency_conflict", f"idempotency key {key!r} was used with other arguments")
        return entry["first"], entry["last"]

    # ---------------------------------------------------------------- commands

    def execute(self, command: Command, ctx: Context) -> LedgerError | None:
        """Decide one command. Raises LedgerError before any event when refused; returns a
        LedgerError after recording when the refusal is itself a fact (a declined charge)."""
        rules.check_actor(ctx.actor, command)
        if command.billing_change and not isinstance(command, (AddPaymentMethod, RemovePaymentMethod)):
            rules.check_no_contract(self)
        handler = getattr(self, "_" + command.name.replace("-", "_"))
        return handler(command, ctx)

    def _subscribe(self, cmd: Subscribe, ctx: Context) -> LedgerError | None:
        if self.subscribed:
            raise LedgerError("invalid_request", f"already subscribed to {self.plan}: use change-plan")
        rules.check_no_open_invoice(self)  # R8, R20: cancel and re-subscribe is no way around an unpaid invoice
        plan = rules.resolve_plan(ctx.catalog, cmd.plan)
        tier = rules.resolve_tier(plan, cmd.tier, cmd.interval)
        rules.check_seats_for_plan(plan, cmd.seats)
        if plan.kind == "trial":
            end = plus_days(ctx.at, plan.trial_days or 0)
            self._set_plan(self.TrialStarted, ctx, plan, None, None, None, Period(ctx.at, end))
            return None
        if plan.kind == "free":
            self._set_plan(self.Subscribed, ctx, plan, None, None, None, None)
            return None
        return self._start_paid(self.Subscribed, ctx, plan, tier, cmd.interval, cmd.seats, "subscription")

    def _change_plan(self, cmd: ChangePlan, ctx: Context) -> LedgerError | None:
        self._require_subscription()
        rules.check_no_open_invoice(self)
        catalog = ctx.catalog
        current = self.plan_of(catalog)
        target = rules.resolve_plan(catalog, cmd.plan)
        if target.kind == "trial":
            raise LedgerError("invalid_request", f"{target.name} starts only with subscribe, on a new workspace")
        interval = cmd.interval or self.interval or "month"
        tier = rules.resolve_tier(target, cmd.tier, interval)
        rules.check_seats_for_plan(target, cmd.seats)
        seats = (cmd.seats or (self.seats if current and current.per_seat else None) or max(self.members, 1)) \
            if target.per_seat else None
        same_plan = target.id == self.plan and (tier.operations if tier else None) == self.tier and (
            not target.billable or interval == self.interval)
        if same_plan:
            if target.per_seat and seats != self.seats:
                return self._set_seats(SetSeats(seats=seats), ctx)
            raise LedgerError("already_on_plan", f"already on {target.name}" + (f" ({interval}ly)" if target.billable else ""))
        assert current is not None
        if not current.billable:
            way = "upgrade" if target.billable else "downgrade"  # e.g. a trial ended early for Free
        else:
            way = pricing.direction(current, self.interval or "month", self.tier_of(catalog), target, interval, tier)
            if way == "same":
                way = "upgrade" if (seats or 0) > (self.seats or 0) else "downgrade"
        if way == "upgrade":
            return self._upgrade(ctx, current, target, tier, interval, seats, cmd.keep_team)
        return self._downgrade(ctx, current, target, tier, interval, seats, cmd.keep_team)

    def _upgrade(self, ctx: Context, current: Plan, target: Plan, tier: Tier | None, interval: str,
                 seats: int | None, keep_team: str | None) -> LedgerError | None:
        rules.check_payment_method(self)
        rules.check_team_choice(current, target, keep_team)
        event = self.TrialConverted if current.kind == "trial" else (
            self.IntervalChanged if target.id == current.id else self.PlanUpgraded)
        new_cycle = not current.billable or ctx.catalog.policy.upgrade_new_cycle or interval != self.interval
        if new_cycle:
            return self._start_paid(event, ctx, target, tier, interval, seats, "upgrade", keep_team=keep_team)
        period = self.period()
        assert period is not None
        new_item = pricing.plan_item(target, interval, seats, tier)
        assert new_item is not None
        lines = self._credit_unused(ctx, period, "plan")
        lines.append(pricing.prorated_charge(new_item, period, ctx.at, ctx.catalog.policy, ctx.catalog.currency, "plan_charge"))
        bill = self._collect(ctx, lines, "upgrade")
        if bill.declined:
            return self._declined(ctx, bill, target.id)
        self._supersede_schedule(ctx)
        self._set_plan(event, ctx, target, tier, interval, seats, None, unit_price=new_item.unit_price, keep_team=keep_team)
        self._record_bill(ctx, bill)
        return None

    def _downgrade(self, ctx: Context, current: Plan, target: Plan, tier: Tier | None, interval: str,
                   seats: int | None, keep_team: str | None) -> LedgerError | None:
        catalog = ctx.catalog
        policy = catalog.policy
        limit = seats if target.per_seat else target.seats
        rules.check_members_fit(self.members, limit, target.name)
        kept_addon = self.storage_addon if target.billable else None  # a plan that bills nothing drops it
        rules.check_storage_fits(self.storage_used, catalog.storage_limit(target, kept_addon), target.name)
        rules.check_team_choice(current, target, keep_team)
        period = self.period()
        if not current.billable or period is None:
            self._set_plan(self.DowngradeApplied, ctx, target, tier, interval, seats, None, keep_team=keep_team)
            return None
        if policy.downgrade_timing == "period_end":
            self._supersede_schedule(ctx)
            notice_at = max(ctx.at, plus_days(period.end, -policy.downgrade_notice_days))
            self._trigger(self.DowngradeScheduled, ctx, plan=target.id, tier=tier.operations if tier else None,
                          interval=interval if target.billable else None, seats=seats, keep_team=keep_team,
                          effective_at=period.end, notice_at=notice_at)
            if notice_at <= ctx.at:
                self._trigger(self.DowngradeNoticeDue, ctx, plan=target.id, effective_at=period.end)
            return None
        if policy.downgrade_timing == "immediate_new_cycle" and target.billable:
            pools = self._unused_operations(ctx)
            carried, _ = pricing.carried_operations(sum(n for n, _ in pools), tier, policy) if tier else (0, 0)
            rate = pricing.lowest_rate(pools)
            error = self._start_paid(self.DowngradeApplied, ctx, target, tier, interval, seats, "downgrade", keep_team=keep_team)
            if error is None and carried and rate:
                until = plus_days(ctx.at, policy.carry_over_days[interval])  # type: ignore[index]
                self._trigger(self.OperationsCarriedOver, ctx, operations=carried, until=until,
                              rate_price=rate.price, rate_operations=rate.operations)
            return error
        if target.billable and interval != self.interval:
            # another interval restarts the cycle now (R14); unused time becomes billing credit (R10)
            return self._start_paid(self.DowngradeApplied, ctx, target, tier, interval, seats, "downgrade",
                                    keep_team=keep_team)
        lines = self._credit_unused(ctx, period, "plan")
        new_item = pricing.plan_item(target, interval, seats, tier)
        if new_item is not None:
            lines.append(pricing.prorated_charge(new_item, period, ctx.at, policy, catalog.currency, "plan_charge"))
        else:
            lines += self._credit_unused(ctx, period, "addon")  # a free plan drops the add-on too (R22)
        bill = self._collect(ctx, lines, "downgrade")
        if bill.declined:
            return self._declined(ctx, bill, target.id)
        self._supersede_schedule(ctx)
        self._set_plan(self.DowngradeApplied, ctx, target, tier, interval if new_item else None, seats, None,
                       unit_price=new_item.unit_price if new_item else None, keep_team=keep_team)
        self._record_bill(ctx, bill)
        return None

    def _cancel_change(self, cmd: CancelChange, ctx: Context) -> LedgerError | None:
        if not self.scheduled:
            raise LedgerError("no_scheduled_change", "there is no scheduled change to cancel")
        if self.scheduled["kind"] == "cancel":
            self._trigger(self.CancellationCancelled, ctx)
        else:
            self._trigger(self.DowngradeCancelled, ctx, plan=self.scheduled["plan"])
        return None

    def _set_seats(self, cmd: SetSeats, ctx: Context) -> LedgerError | None:
        self._require_subscription()
        rules.check_no_open_invoice(self)
        plan = self.plan_of(ctx.catalog)
        if plan is None or not plan.per_seat or not plan.billable:
            raise LedgerError("invalid_request", f"{plan.name if plan else 'this plan'} is not billed per seat")
        rules.check_seats_for_plan(plan, cmd.seats)
        if cmd.seats == self.seats:
            raise LedgerError("invalid_request", f"the workspace already has {cmd.seats} seats")
        rules.check_members_fit(self.members, cmd.seats, f"{cmd.seats} seats")
        period, policy, currency = self.period(), ctx.catalog.policy, ctx.catalog.currency
        assert period is not None
        unit = self.prices.get("plan", plan.prices[self.interval])
        lines: list[pricing.Line] = []
        added = cmd.seats - self.seats_held(policy)
        if added > 0:
            item = pricing.Priced("plan", f"{plan.name}: {added} added seat(s)", unit, added)
            lines.append(pricing.prorated_charge(item, period, ctx.at, policy, currency, "seat_charge"))
        elif cmd.seats < (self.seats or 0) and policy.seat_removal_credit:
            item = pricing.Priced("plan", f"{plan.name}: {self.seats - cmd.seats} removed seat(s)", unit, self.seats - cmd.seats)
            credit = pricing.unused_time_credit(item, period, ctx.at, policy, currency, "seat_credit", self.charged_net("plan"))
            lines += [credit] if credit else []
        bill = self._collect(ctx, lines, "seats") if lines else None
        if bill and bill.declined:
            return self._declined(ctx, bill, plan.id)
        self._trigger(self.SeatsChanged, ctx, seats=cmd.seats, previous=self.seats, unit_price=unit)
        if bill:
            self._record_bill(ctx, bill)
        return None

    def _set_members(self, cmd: SetMembers, ctx: Context) -> LedgerError | None:
        self._trigger(self.MembersChanged, ctx, members=cmd.members, previous=self.members)
        return None

    def _report_storage(self, cmd: ReportStorage, ctx: Context) -> LedgerError | None:
        self._trigger(self.StorageUsageReported, ctx, gb=cmd.gb)
        return None

    def _set_storage_addon(self, cmd: SetStorageAddon, ctx: Context) -> LedgerError | None:
        self._require_subscription()
        rules.check_no_open_invoice(self)
        catalog = ctx.catalog
        plan = self.plan_of(catalog)
        if plan is None or not plan.billable:
            raise LedgerError("invalid_request", "storage add-ons need a paid plan")
        if cmd.addon is not None and catalog.addon(cmd.addon) is None:
            known = ", ".join(a.id for a in catalog.addons) or "none"
            raise LedgerError("invalid_request", f"no storage add-on {cmd.addon!r}; add-ons: {known}")
        if cmd.addon == self.storage_addon:
            raise LedgerError("invalid_request", f"storage add-on is already {cmd.addon}")
        rules.check_storage_fits(self.storage_used, catalog.storage_limit(plan, cmd.addon), "the new storage")
        period = self.period()
        assert period is not None
        lines = self._credit_unused(ctx, period, "addon")
        item = pricing.addon_item(catalog, cmd.addon, self.interval or "month")
        if item:
            lines.append(pricing.prorated_charge(item, period, ctx.at, catalog.policy, catalog.currency, "addon_charge"))
        bill = self._collect(ctx, lines, "storage_addon") if lines else None
        if bill and bill.declined:
            return self._declined(ctx, bill, plan.id)
        self._trigger(self.StorageAddonChanged, ctx, addon=cmd.addon, previous=self.storage_addon,
                      unit_price=item.unit_price if item else None)
        if bill:
            self._record_bill(ctx, bill)
        return None

    def _buy_ai_credits(self, cmd: BuyAICredits, ctx: Context) -> LedgerError | None:
        self._require_subscription()
        pack = ctx.catalog.credit_pack(cmd.pack)
        if pack is None:
            known = ", ".join(p.id for p in ctx.catalog.credit_packs) or "none"
            raise LedgerError("invalid_request", f"no AI credit pack {cmd.pack!r}; packs: {known}")
        rules.check_payment_method(self)
        line = pricing.one_time_charge("ai_credit_pack", pack.name, pack.price, 1, ctx.catalog.currency, ctx.at)
        bill = self._collect(ctx, [line], "ai_credit_pack", use_credit=False)
        if bill.declined:
            return self._declined(ctx, bill, self.plan or "")
        self._trigger(self.AICreditPackBought, ctx, pack=pack.id, credits=pack.credits, price=pack.price,
                      invoice_id=bill.invoice_id)
        self._record_bill(ctx, bill)
        return None

    def _consume_ai_credits(self, cmd: ConsumeAICredits, ctx: Context) -> LedgerError | None:
        available = self.ai_granted + self.ai_purchased
        if cmd.credits > available:
            raise LedgerError("insufficient_credits", f"{cmd.credits} AI credits asked, {available} available")
        from_granted = min(cmd.credits, self.ai_granted)
        self._trigger(self.AICreditsConsumed, ctx, credits=cmd.credits, from_granted=from_granted,
                      from_purchased=cmd.credits - from_granted)
        return None

    def _record_usage(self, cmd: RecordUsage, ctx: Context) -> LedgerError | None:
        self._require_tiered(ctx)
        left = cmd.operations
        parts = []
        for pool in (self.ops_carried, self.ops_allotment, self.ops_extra):
            take = min(left, pool)
            parts.append(take)
            left -= take
        self._trigger(self.OperationsUsed, ctx, operations=cmd.operations, from_carried=parts[0],
                      from_allotment=parts[1], from_extra=parts[2], overage=left)
        return None

    def _buy_operations(self, cmd: BuyOperations, ctx: Context) -> LedgerError | None:
        self._require_subscription()  # a canceled workspace has no plan to buy operations for
        tier = self._require_tiered(ctx)
        rules.check_no_open_invoice(self)
        pack = ctx.catalog.policy.operations_pack
        if cmd.operations % pack:
            raise LedgerError("invalid_request", f"extra operations are sold in packs of {pack:,}")
        rules.check_payment_method(self)
        line = pricing.operations_pack_charge(cmd.operations, pricing.Rate.of(tier), ctx.catalog.currency, ctx.at)
        bill = self._collect(ctx, [line], "operations")
        if bill.declined:
            return self._declined(ctx, bill, self.plan or "")
        self._trigger(self.OperationsBought, ctx, operations=cmd.operations, price=line.amount, invoice_id=bill.invoice_id)
        self._record_bill(ctx, bill)
        return None

    def _add_payment_method(self, cmd: AddPaymentMethod, ctx: Context) -> LedgerError | None:
        self._trigger(self.PaymentMethodAdded, ctx, payment_method=cmd.payment_method)
        return None

    def _remove_payment_method(self, cmd: RemovePaymentMethod, ctx: Context) -> LedgerError | None:
        if cmd.payment_method not in self.payment_methods:
            raise LedgerError("invalid_request", f"payment method {cmd.payment_method} is not on file")
        self._trigger(self.PaymentMethodRemoved, ctx, payment_method=cmd.payment_method)
        return None

    def _pay_invoice(self, cmd: PayInvoice, ctx: Context) -> LedgerError | None:
        invoice_id = cmd.invoice or self.open_invoice
        if invoice_id is None or self.invoices.get(invoice_id, {}).get("status") != "open":
            raise LedgerError("invalid_request", f"no open invoice {cmd.invoice or ''}".strip())
        rules.check_payment_method(self)
        amount = self.invoices[invoice_id]["amount_due"]
        result = self._charge(ctx, amount, invoice_id, f"{invoice_id}:retry{self.version}")
        if not result.ok:
            self._trigger(self.PaymentFailed, ctx, invoice_id=invoice_id, amount=amount,
                          decline_code=result.decline_code or "declined", message=result.message)
            return payment_failed(amount, result.message)
        self._trigger(self.PaymentSucceeded, ctx, invoice_id=invoice_id, amount=amount,
                      charge_id=result.charge_id, payment_method=self.default_payment_method)
        return None

    def _set_contract(self, cmd: SetContract, ctx: Context) -> LedgerError | None:
        if cmd.contract == self.contract:
            raise LedgerError("invalid_request", f"contract is already {cmd.contract}")
        self._trigger(self.ContractSet, ctx, contract=cmd.contract)
        return None

    def _cancel(self, cmd: Cancel, ctx: Context) -> LedgerError | None:
        self._require_subscription()
        if self.scheduled and self.scheduled["kind"] == "cancel":
            raise LedgerError("invalid_request", "cancellation is already scheduled")
        period = self.period()
        plan = self.plan_of(ctx.catalog)
        if period is None or plan is None or not plan.billable:
            self._trigger(self.SubscriptionCanceled, ctx, plan=self.plan)
            return None
        self._supersede_schedule(ctx)
        self._trigger(self.CancellationScheduled, ctx, effective_at=period.end)
        return None

    # ------------------------------------------------------- what falls due

    def process_due(self, ctx: Context) -> None:
        """Run, in time order, every renewal, trial end, scheduled change, notice and
        operations reset due at or before ctx.at, each recorded at its own due instant."""
        for _ in range(MAX_DUE_STEPS):
            due = self._next_due()
            if due is None or due[0] > ctx.at:
                return
            at, what = due
            getattr(self, "_due_" + what)(ctx.system(at, what))
        raise RuntimeError("too many due items: is the clock sane?")

    def _next_due(self) -> tuple[datetime, str] | None:
        candidates = []
        if self.scheduled and not self.scheduled["noticed"]:
            candidates.append((self.scheduled["notice_at"], "notice"))
        if self.ops_carried and self.ops_carried_until:
            candidates.append((self.ops_carried_until, "carry_expiry"))
        if self.ops_reset_at and self.period_end and self.ops_reset_at < self.period_end:
            candidates.append((self.ops_reset_at, "operations_reset"))
        if self.subscribed and self.period_end:
            candidates.append((self.period_end, "period_end"))
        return min(candidates) if candidates else None

    def _due_notice(self, ctx: Context) -> None:
        self._trigger(self.DowngradeNoticeDue, ctx, plan=self.scheduled["plan"],
                      effective_at=self.scheduled["effective_at"])

    def _due_carry_expiry(self, ctx: Context) -> None:
        self._trigger(self.OperationsExpired, ctx, operations=self.ops_carried)

    def _due_operations_reset(self, ctx: Context) -> None:
        tier = self.tier_of(ctx.catalog)
        _, month = period_containing(self.period_start, "month", ctx.at)
        self._trigger(self.OperationsReset, ctx, allotment=tier.monthly_operations if tier else 0,
                      expired_extra=self.ops_extra,
                      next_reset_at=month.end if self.period_end and month.end < self.period_end else None)

    def _due_period_end(self, ctx: Context) -> None:
        catalog = ctx.catalog
        if self.status == "trialing":
            fallback = catalog.plan(catalog.policy.trial_fallback or "") or next(p for p in catalog.plans if p.kind == "free")
            self._set_plan(self.TrialExpired, ctx, fallback, None, None, None, None)
            return
        scheduled = self.scheduled
        if scheduled and scheduled["kind"] == "cancel":
            self._trigger(self.SubscriptionCanceled, ctx, plan=self.plan)
            return
        if scheduled and scheduled["kind"] == "downgrade":
            target = catalog.plan(scheduled["plan"])
            assert target is not None
            tier = target.tier(scheduled["tier"], scheduled["interval"]) if scheduled["tier"] else None
            if not target.billable:
                self._set_plan(self.DowngradeApplied, ctx, target, None, None, None, None,
                               keep_team=scheduled["keep_team"])
                return
            # another interval starts its own cycle at the boundary (R14, R17)
            new_period = period_number(ctx.at, scheduled["interval"], 0) if scheduled["interval"] != self.interval else None
            self._set_plan(self.DowngradeApplied, ctx, target, tier, scheduled["interval"], scheduled["seats"],
                           new_period, unit_price=pricing.plan_item(target, scheduled["interval"], scheduled["seats"], tier).unit_price,
                           keep_team=scheduled["keep_team"])
        self._renew(ctx)

    def _renew(self, ctx: Context) -> None:
        catalog = ctx.catalog
        plan = self.plan_of(catalog)
        if plan is None or not plan.billable or self.anchor is None:
            return
        _, nxt = period_containing(self.anchor, self.interval, ctx.at)
        item = pricing.plan_item(plan, self.interval, self.seats, self.tier_of(catalog))
        addon = pricing.addon_item(catalog, self.storage_addon, self.interval)
        lines = [pricing.full_charge(item, nxt, catalog.currency, "plan_charge")]
        if addon:
            lines.append(pricing.full_charge(addon, nxt, catalog.currency, "addon_charge"))
        self._trigger(self.PeriodRenewed, ctx, period_start=nxt.start, period_end=nxt.end, seats=self.seats,
                      unit_price=item.unit_price, addon_price=addon.unit_price if addon else None)
        self._grant_cycle(ctx, plan, reset_operations=True)
        bill = self._collect(ctx, lines, "renewal", fail_open=True)
        self._record_bill(ctx, bill)

    # ----------------------------------------------------------------- helpers

    def _trigger(self, event_class: type[Subscription.Event], ctx: Context, **fields: Any) -> None:
        self.trigger_event(event_class, **ctx.meta(), **fields)

    def _require_subscription(self) -> None:
        if not self.subscribed:
            raise LedgerError("invalid_request", "the workspace has no subscription: subscribe first")

    def _require_tiered(self, ctx: Context) -> Tier:
        tier = self.tier_of(ctx.catalog)
        if tier is None:
            raise LedgerError("invalid_request", "operations apply only to plans with operation tiers")
        return tier

    def _supersede_schedule(self, ctx: Context) -> None:
        if self.scheduled and self.scheduled["kind"] == "downgrade":
            self._trigger(self.DowngradeCancelled, ctx, plan=self.scheduled["plan"])
        elif self.scheduled and self.scheduled["kind"] == "cancel":
            self._trigger(self.CancellationCancelled, ctx)

    def _set_plan(self, event_class: type[Subscription.PlanSet], ctx: Context, plan: Plan, tier: Tier | None,
                  interval: str | None, seats: int | None, new_period: Period | None, *,
                  unit_price: Decimal | None = None, addon_price: Decimal | None = None,
                  keep_team: str | None = None) -> None:
        """Put the workspace on `plan`; with `new_period` the billing cycle restarts there, without
        it a paid plan keeps the current cycle and a plan that bills nothing has none."""
        if new_period is not None:
            start, end = new_period.start, new_period.end
        elif plan.billable:
            start, end = self.period_start, self.period_end
        else:
            start = end = None
        if tier is None:
            allotment: int | None = 0
        else:
            allotment = tier.monthly_operations if new_period else None  # None: unchanged in this cycle
        self._trigger(
            event_class, ctx, from_plan=self.plan, plan=plan.id, tier=tier.operations if tier else None,
            interval=interval, seats=seats, unit_price=unit_price, addon_price=addon_price,
            new_cycle=new_period is not None or not plan.billable, period_start=start, period_end=end,
            ops_allotment=allotment, kept_team=keep_team,
        )
        if not plan.ai_credits_per_seat and self.ai_granted:
            self._trigger(self.AICreditsGranted, ctx, credits=0, expired=self.ai_granted)

    def _start_paid(self, event_class: type[Subscription.PlanSet], ctx: Context, plan: Plan, tier: Tier | None,
                    interval: str, seats: int | None, purpose: str, keep_team: str | None = None) -> LedgerError | None:
        """A paid cycle starting now (R14, R15, 004): full charge for the new period, credit for
        what the old plan leaves unused, then the plan, the grants and the bill, in that order."""
        rules.check_payment_method(self)
        catalog = ctx.catalog
        if plan.per_seat and seats is None:
            seats = max(self.members, 1)
        new_period = period_number(ctx.at, interval, 0)
        item = pricing.plan_item(plan, interval, seats, tier)
        addon = pricing.addon_item(catalog, self.storage_addon, interval)
        charges = [pricing.full_charge(item, new_period, catalog.currency, "plan_charge")]
        if addon:
            charges.append(pricing.full_charge(addon, new_period, catalog.currency, "addon_charge"))
        credits: list[pricing.Line] = []
        converted = 0
        old_period = self.period()
        if old_period and self.prices:
            if catalog.policy.upgrade_credit == "unused_operations" and self.tier_of(catalog) and purpose == "upgrade":
                pools = self._unused_operations(ctx)
                converted = sum(n for n, _ in pools)
                cap = sum((c.amount for c in charges), ZERO)
                line = pricing.operations_credit(pools, cap, catalog.currency, ctx.at)
                credits += [line] if line else []
            elif catalog.policy.upgrade_credit == "unused_time":
                credits += self._credit_unused(ctx, old_period, "plan")
            if self.storage_addon:
                credits += self._credit_unused(ctx, old_period, "addon")
        bill = self._collect(ctx, credits + charges, purpose)
        if bill.declined:
            return self._declined(ctx, bill, plan.id)
        self._supersede_schedule(ctx)
        if converted and credits:
            self._trigger(self.OperationsConvertedToCredit, ctx, operations=converted, amount=-credits[0].amount,
                          formula=credits[0].formula)
        self._set_plan(event_class, ctx, plan, tier, interval, seats, new_period, unit_price=item.unit_price,
                       addon_price=addon.unit_price if addon else None, keep_team=keep_team)
        self._grant_cycle(ctx, plan, reset_operations=False)
        self._record_bill(ctx, bill)
        return None

    def _unused_operations(self, ctx: Context) -> list[tuple[int, pricing.Rate]]:
        """Unused operations by the rate they were paid at: this tier's (allotment, extra packs and
        months not yet reset) and the carried-over ones at the rate they came with."""
        tier = self.tier_of(ctx.catalog)
        if tier is None:
            return []
        own = self.ops_allotment + self.ops_extra + self._unreset_operations(ctx)
        pools = [(own, pricing.Rate.of(tier))]
        if self.ops_carried:
            rate = self.ops_carried_rate
            pools.append((self.ops_carried, pricing.Rate(rate["price"], rate["operations"]) if rate else pools[0][1]))
        return pools

    def _unreset_operations(self, ctx: Context) -> int:
        """What a paid annual tier still owes this period: the monthly allotments not yet reset.
        They are unused operations of the tier the price per operation is taken from (R16)."""
        tier = self.tier_of(ctx.catalog)
        if tier is None or tier.interval != "year" or self.period_start is None:
            return 0
        month, _ = period_containing(self.period_start, "month", ctx.at)
        return tier.monthly_operations * max(11 - month, 0)

    def _grant_cycle(self, ctx: Context, plan: Plan, reset_operations: bool) -> None:
        """A new cycle's grants: subscription AI credits replace what the last cycle left (R23);
        on renewal the operations allotment resets and extra operations expire (R18)."""
        tier = self.tier_of(ctx.catalog)
        if tier and reset_operations:
            self._trigger(self.OperationsReset, ctx, allotment=tier.monthly_operations, expired_extra=self.ops_extra,
                          next_reset_at=add_months(ctx.at, 1) if self.interval == "year" else None)
        if plan.ai_credits_per_seat:
            credits = plan.ai_credits_per_seat * (self.seats or 1)
            self._trigger(self.AICreditsGranted, ctx, credits=credits, expired=self.ai_granted)

    def _credit_unused(self, ctx: Context, period: Period, item_key: str) -> list[pricing.Line]:
        item = self.current_item(ctx.catalog) if item_key == "plan" else self.current_addon(ctx.catalog)
        if item is None:
            return []
        line = pricing.unused_time_credit(item, period, ctx.at, ctx.catalog.policy, ctx.catalog.currency,
                                          f"{item_key}_credit", self.charged_net(item_key))
        return [line] if line else []

    def _charge(self, ctx: Context, amount: Decimal, description: str, key: str) -> ChargeResult:
        method = self.default_payment_method
        if method is None:
            return ChargeResult(ok=False, decline_code="no_payment_method", message="no payment method on file")
        return ctx.payments.charge(
            workspace_id=self.workspace_id, payment_method=method, amount=amount, currency=ctx.catalog.currency,
            description=description, idempotency_key=f"{self.workspace_id}:{key}",
        )

    def _collect(self, ctx: Context, lines: list[pricing.Line], purpose: str, fail_open: bool = False,
                 use_credit: bool = True) -> Bill:
        """Total the lines, apply billing credit and collect what is due now. With `fail_open`
        (renewals) a decline leaves the invoice open instead of undoing the change. Billing credit
        never buys AI credits (R10), so AI packs are collected with `use_credit=False`."""
        balance = self.billing_credit if use_credit else ZERO
        totals = pricing.totals(lines, balance, ctx.catalog.policy)
        invoice_id = f"in_{self.workspace_id}_{self.invoice_count + 1:04d}"
        if totals.amount_due <= 0:
            return Bill(invoice_id, lines, totals, purpose, None, None)
        if not fail_open:
            rules.check_payment_method(self)  # R7: refused before anything is recorded
        result = self._charge(ctx, totals.amount_due, f"{purpose} {invoice_id}", invoice_id)
        if result.ok:
            return Bill(invoice_id, lines, totals, purpose, result.charge_id, self.default_payment_method)
        return Bill(invoice_id, lines, totals, purpose, None, self.default_payment_method,
                    declined=result.decline_code or "declined", decline_message=result.message or "card declined")

    def _declined(self, ctx: Context, bill: Bill, plan_id: str) -> LedgerError:
        fields = {"purpose": bill.purpose, "amount": bill.totals.amount_due,
                  "decline_code": bill.declined, "message": bill.decline_message}
        if bill.purpose == "upgrade":
            self._trigger(self.UpgradePaymentFailed, ctx, plan=plan_id, **fields)
        else:
            self._trigger(self.ChargeDeclined, ctx, **fields)
        return charge_declined(bill.totals.amount_due, bill.declined or "declined")

    def _record_bill(self, ctx: Context, bill: Bill) -> None:
        t = bill.totals
        self._trigger(self.InvoiceIssued, ctx, invoice_id=bill.invoice_id, purpose=bill.purpose,
                      lines=[line.as_dict() for line in bill.lines], subtotal=t.subtotal,
                      credit_applied=t.credit_applied, amount_due=t.amount_due, currency=ctx.catalog.currency)
        if t.credit_applied:
            self._trigger(self.BillingCreditApplied, ctx, amount=t.credit_applied, invoice_id=bill.invoice_id)
        if t.credit_issued:
            self._trigger(self.BillingCreditIssued, ctx, amount=t.credit_issued, invoice_id=bill.invoice_id)
        if t.amount_due > 0 and bill.declined:
            self._trigger(self.PaymentFailed, ctx, invoice_id=bill.invoice_id, amount=t.amount_due,
                          decline_code=bill.declined, message=bill.decline_message)
        elif t.amount_due > 0:
            self._trigger(self.PaymentSucceeded, ctx, invoice_id=bill.invoice_id, amount=t.amount_due,
                          charge_id=bill.charge_id, payment_method=bill.payment_method)
