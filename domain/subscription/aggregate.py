"""The Subscription aggregate: one per workspace, its state, and how it decides.

A command is decided on a copy (`decide`): every check (domain/rules.py) runs and the change
is priced (domain/pricing.py) before a single fact is kept, so a refusal records nothing.
`record` then keeps the facts or, when the decision needs money now, only the pending charge:
what the charge pays for is recorded by `settle` once it succeeds (R11, R12). The aggregate
never calls a payment provider; the Ledger application does, between `record` and `settle`.
The decisions themselves live by rule family in the sibling modules, mapped in HANDLERS.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from eventsourcing.domain import Aggregate

from domain import pricing, rules
from domain.catalog import Catalog, Plan, Policy, Tier
from domain.commands import (
    AddPaymentMethod, BuyAICredits, BuyOperations, Cancel, CancelChange, ChangePlan, Command, ConsumeAICredits,
    PayInvoice, RecordUsage, RemovePaymentMethod, ReportStorage, SetContract, SetMembers, SetSeats, SetStorageAddon,
    Subscribe,
)
from domain.errors import LedgerError
from domain.money import ZERO
from domain.payments import ChargeResult
from domain.periods import Period
from domain.subscription import billing, billing_events, credits_operations, events, plan_changes, scheduler
from domain.subscription import usage_events
from domain.subscription import seats_storage
from domain.subscription.context import ChargeDue, Context, Decision

NAMESPACE = uuid.UUID("6d1b3c52-64f5-4c4e-9f0e-5b1a2f0c9e10")


@functools.lru_cache(maxsize=10_000)
def workspace_uuid(workspace_id: str) -> uuid.UUID:
    """The workspace's stream id; remembered, as a command asks for it several times."""
    return uuid.uuid5(NAMESPACE, workspace_id)


class Scheduled(TypedDict, total=False):
    kind: str  # "downgrade" | "cancel"
    plan: str | None
    tier: int | None
    interval: str | None
    seats: int | None
    keep_team: str | None
    effective_at: datetime
    notice_at: datetime
    noticed: bool


class InvoiceState(TypedDict):
    amount_due: Decimal
    status: str  # "open" (a paid invoice is not kept)
    attempts: int
    failed_at: datetime | None  # first failed collection: anchors dunning
    retry_at: datetime | None  # next automatic retry
    retries: int | None  # automatic retries made so far (None: counted before PaymentFailed v4)


class PendingCharge(TypedDict):
    invoice_id: str
    attempt: int
    charge_key: str
    amount: Decimal
    currency: str
    payment_method: str
    purpose: str
    plan: str | None
    effects: list[dict[str, Any]]
    action_required: bool
    requested_at: datetime | None
    requested_by: dict[str, Any]
    provider_reference: NotRequired[str | None]  # ChargeSubmitted; absent in older snapshots
    ops_reported: NotRequired[dict[str, Any]]  # operations reported while it waited (operations_pools.py)


class IdempotencyEntry(TypedDict):
    hash: str | None
    first: int
    last: int
    command_id: str | None
    at: datetime
    """When the key was first used: it is forgotten KEY_RETENTION later (events.py)."""


class Rate(TypedDict):
    price: Decimal
    operations: int


class Overage(TypedDict):
    """Operations used beyond the allowance at one plan's rate, not billed yet (policy `overage = "bill"`)."""

    operations: int
    rate: Rate


Handler = Callable[["Subscription", Any, Context], ChargeDue | None]
IMMUTABLE = (str, int, float, bool, type(None), Decimal, datetime, uuid.UUID)
EXACTLY_IMMUTABLE = frozenset(IMMUTABLE)
"""The same, for `type(v) in`: one hash look-up instead of a scan of the tuple, per value copied."""


def copied(value: Any) -> Any:
    """A deep copy of plain state (dicts and lists of immutable values), made without the
    generic machinery of copy.deepcopy; anything else is left to it."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in EXACTLY_IMMUTABLE else copied(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in EXACTLY_IMMUTABLE else copied(v) for v in value]
    if kind in EXACTLY_IMMUTABLE or isinstance(value, IMMUTABLE):
        return value
    return copy.deepcopy(value)


HANDLERS: dict[type[Command], Handler] = {
    Subscribe: plan_changes.subscribe,
    ChangePlan: plan_changes.change_plan,
    CancelChange: plan_changes.cancel_change,
    Cancel: plan_changes.cancel,
    SetSeats: seats_storage.set_seats,
    SetMembers: seats_storage.set_members,
    ReportStorage: seats_storage.report_storage,
    SetStorageAddon: seats_storage.set_storage_addon,
    BuyAICredits: credits_operations.buy_ai_credits,
    ConsumeAICredits: credits_operations.consume_ai_credits,
    RecordUsage: credits_operations.record_usage,
    BuyOperations: credits_operations.buy_operations,
    AddPaymentMethod: billing.add_payment_method,
    RemovePaymentMethod: billing.remove_payment_method,
    PayInvoice: billing.pay_invoice,
    SetContract: plan_changes.set_contract,
}
PAYMENT_METHOD_COMMANDS = (AddPaymentMethod, RemovePaymentMethod)


class Subscription(Aggregate):
    """A workspace's subscription. State is plain data so snapshots stay transcodable.
    v2 state added pending charges and per-invoice charge attempts; v3 the AI grant window,
    operations overage, the trial used and dunning; v4 keeps only open invoices; v5 keeps
    idempotency keys for KEY_RETENTION only.

    State is bounded by what decisions need, not by history: `invoices` holds the open invoices
    (a paid one leaves it; its history is in the events, the invoices read model and
    replay/as_of.py), `charged` this period's charges, so a workspace with years of invoices
    loads (and snapshots) as fast as a new one."""

    class_version = 6

    # The facts it records, also reachable as Subscription.PlanUpgraded etc.
    Event = events.Event
    WorkspaceRegistered = events.WorkspaceRegistered
    PlanSet = events.PlanSet
    Subscribed = events.Subscribed
    TrialStarted = events.TrialStarted
    TrialConverted = events.TrialConverted
    TrialExpired = events.TrialExpired
    PlanUpgraded = events.PlanUpgraded
    IntervalChanged = events.IntervalChanged
    TierChanged = events.TierChanged
    DowngradeApplied = events.DowngradeApplied
    DowngradeScheduled = events.DowngradeScheduled
    DowngradeCancelled = events.DowngradeCancelled
    DowngradeNoticeDue = events.DowngradeNoticeDue
    CancellationScheduled = events.CancellationScheduled
    CancellationCancelled = events.CancellationCancelled
    SubscriptionCanceled = events.SubscriptionCanceled
    PeriodRenewed = events.PeriodRenewed
    WorkspaceSuspended = events.WorkspaceSuspended
    WorkspaceReactivated = events.WorkspaceReactivated
    SeatsChanged = events.SeatsChanged
    MembersChanged = events.MembersChanged
    StorageUsageReported = events.StorageUsageReported
    StorageAddonChanged = events.StorageAddonChanged
    AICreditPackBought = usage_events.AICreditPackBought
    AICreditsGranted = usage_events.AICreditsGranted
    AICreditsProrated = usage_events.AICreditsProrated
    AICreditsConsumed = usage_events.AICreditsConsumed
    OperationsUsed = usage_events.OperationsUsed
    OperationsRecounted = usage_events.OperationsRecounted
    OperationsOverageBilled = usage_events.OperationsOverageBilled
    OperationsBought = usage_events.OperationsBought
    OperationsCarriedOver = usage_events.OperationsCarriedOver
    OperationsConvertedToCredit = usage_events.OperationsConvertedToCredit
    OperationsReset = usage_events.OperationsReset
    OperationsExpired = usage_events.OperationsExpired
    InvoiceIssued = billing_events.InvoiceIssued
    BillingCreditIssued = billing_events.BillingCreditIssued
    BillingCreditApplied = billing_events.BillingCreditApplied
    ChargeRequested = billing_events.ChargeRequested
    ChargeSubmitted = billing_events.ChargeSubmitted
    PaymentActionRequired = billing_events.PaymentActionRequired
    PaymentSucceeded = billing_events.PaymentSucceeded
    PaymentFailed = billing_events.PaymentFailed
    ChargeDeclined = billing_events.ChargeDeclined
    UpgradePaymentFailed = billing_events.UpgradePaymentFailed
    PaymentMethodAdded = billing_events.PaymentMethodAdded
    PaymentMethodRemoved = billing_events.PaymentMethodRemoved
    ContractSet = billing_events.ContractSet

    def __init__(self, workspace_id: str, catalog_id: str) -> None:
        self.workspace_id = workspace_id
        self.catalog_id = catalog_id
        self.catalog_version: str | None = None
        self.plan: str | None = None
        self.tier: int | None = None
        self.interval: str | None = None
        self.seats: int | None = None
        self.seats_paid = 0
        self.members = 0
        self.status = "none"
        self.anchor: datetime | None = None
        self.period_start: datetime | None = None
        self.period_end: datetime | None = None
        self.scheduled: Scheduled | None = None
        self.billing_credit: Decimal = ZERO
        self.ai_granted = 0
        self.ai_purchased = 0
        self.ai_worth = 0
        self.ai_rate = 0
        self.ai_debt = 0
        self.ai_grant_at: datetime | None = None
        self.ops_allotment = 0
        self.ops_extra = 0
        self.ops_carried = 0
        self.ops_carried_until: datetime | None = None
        self.ops_carried_rate: Rate | None = None
        self.ops_reset_at: datetime | None = None
        self.ops_overage: list[Overage] = []
        self.storage_used: Decimal = ZERO
        self.storage_addon: str | None = None
        self.payment_methods: list[str] = []
        self.invoices: dict[str, InvoiceState] = {}
        """The open invoices (a paid one leaves: state stays bounded as history grows)."""
        self.invoice_count = 0
        self.pending_charges: dict[str, PendingCharge] = {}
        self.contract: str | None = None
        self.charged: dict[str, Decimal] = {}
        self.prices: dict[str, Decimal] = {}
        self.idempotency: dict[str, IdempotencyEntry] = {}
        self.kept_team: str | None = None
        self.trial_used = False

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["pending_charges"] = {}
        for invoice in state["invoices"].values():
            invoice.setdefault("attempts", 0)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """v3: the grant window's worth and rate, AI credit debt and the next monthly grant (R23);
        operations overage not billed yet; whether the workspace has had its trial (R15); each
        invoice's dunning (first failure, next retry) and when a pending charge was requested."""
        state["ai_worth"] = state["ai_rate"] = state["ai_granted"]
        state["ai_debt"] = 0
        state["ai_grant_at"] = None
        state["ops_overage"] = []
        state["trial_used"] = state["status"] == "trialing"  # an older snapshot cannot tell an earlier trial
        for invoice in state["invoices"].values():
            invoice.setdefault("failed_at", None)
            invoice.setdefault("retry_at", None)
        for pending in state["pending_charges"].values():
            pending.setdefault("requested_at", None)

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        """v4: paid invoices are no longer kept in the state."""
        state["invoices"] = {i: inv for i, inv in state["invoices"].items() if inv["status"] != "paid"}

    @staticmethod
    def upcast_v4_v5(state: dict[str, Any]) -> None:
        """v5: each key records when it was first used. An older snapshot cannot tell, so its keys
        count from the snapshot's last change: kept at least as long as before, never less."""
        for entry in state["idempotency"].values():
            entry.setdefault("at", state["_modified_on"])
            entry.setdefault("command_id", None)  # a key recorded before commands had ids (v1 snapshots)

    @staticmethod
    def upcast_v5_v6(state: dict[str, Any]) -> None:
        """v6: each open invoice counts its automatic retries: none before its first failure; after
        it, unknown (None), as its events from before PaymentFailed v4 replay to."""
        for invoice in state["invoices"].values():
            invoice.setdefault("retries", 0 if invoice["failed_at"] is None else None)

    def __deepcopy__(self, memo: dict[int, Any]) -> Subscription:
        """Every command copies the workspace (a decision is made on a copy, Subscription.decide):
        state is plain data, so a structural copy does."""
        clone = object.__new__(type(self))
        clone.__dict__.update({k: v if type(v) in EXACTLY_IMMUTABLE else copied(v) for k, v in self.__dict__.items()})
        return clone

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
        return plan.tier(self.tier, self.interval) if plan and self.tier and self.interval else None

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

    def seat_changes(self) -> pricing.SeatChanges:
        """This period's seat lines so far (pricing.seat_change)."""
        if not self.period_end:
            return pricing.SeatChanges()
        period = self.period_end.isoformat()
        return pricing.SeatChanges(self.charged.get(f"seat_changes_exact@{period}", ZERO),
                                   self.charged.get(f"seat_changes_billed@{period}", ZERO))

    def seats_held(self, policy: Policy) -> int:
        """Seats paid for this period and not credited back: a seat removed without a credit
        stays paid until the period ends (R21); one credited back (policy) must be bought again."""
        if policy.seat_removal_credit:
            return self.seats or 0
        return max(self.seats or 0, self.seats_paid)

    def current_item(self, catalog: Catalog, seats: int | None = None) -> pricing.Priced | None:
        """The plan as paid for this period: the unit price recorded when it was bought, for
        every seat paid this period (seats removed mid-period were still paid for, R21), or for
        `seats` of them."""
        plan = self.plan_of(catalog)
        if plan is None or "plan" not in self.prices:
            return None
        paid_seats = (seats if seats is not None else self.seats_held(catalog.policy)) or None
        base = pricing.plan_item(plan, self.interval or "month", paid_seats, self.tier_of(catalog))
        return pricing.Priced("plan", base.description, self.prices["plan"], base.quantity) if base else None

    def current_addon(self, catalog: Catalog) -> pricing.Priced | None:
        base = pricing.addon_item(catalog, self.storage_addon, self.interval or "month")
        if base is None or "addon" not in self.prices:
            return None
        return pricing.Priced("addon", base.description, self.prices["addon"], 1)

    def next_invoice_id(self) -> str:
        """A new invoice id: minted from a counter that a declined charge also advances, so an id
        (and the charge key derived from it) is never reused."""
        return f"in_{self.workspace_id}_{self.invoice_count + 1:04d}"

    def idempotent_entry(self, key: str, args_hash: str, now: datetime) -> IdempotencyEntry | None:
        """What a key already recorded, or None; the key with other arguments is refused. A key
        first used more than KEY_RETENTION before `now` is forgotten: its reuse is a new command."""
        entry = self.idempotency.get(key)
        if entry is None or events.forgotten(entry, now):
            return None
        if entry["hash"] != args_hash:
            raise LedgerError("idempotency_conflict", f"idempotency key {key!r} was used with other arguments")
        return entry

    def next_due_at(self) -> datetime | None:
        due = scheduler.next_due(self)
        return due[0] if due else None

    # -------------------------------------------------------------- deciding

    def decide(self, command: Command, ctx: Context) -> Decision:
        """Decide `command` on a copy. Raises LedgerError, recording nothing, when refused."""
        rules.check_may_decide(self, ctx.actor, command,
                               bills=command.billing_change and not isinstance(command, PAYMENT_METHOD_COMMANDS))
        trial = copy.deepcopy(self)
        trial._pending_events = []
        charge = HANDLERS[type(command)](trial, command, ctx)
        return Decision(list(trial.collect_events()), charge, trial)

    def record(self, decision: Decision, ctx: Context) -> None:
        """Keep a decision: its facts, or, when it needs money now, the pending charge alone."""
        if decision.charge is not None:
            billing.request_charge(self, ctx, decision.charge, decision.effects)
            return
        for event in decision.effects:
            event.mutate(self)
            self._pending_events.append(event)

    def kept(self, decision: Decision, ctx: Context) -> Subscription:
        """`record` leaving this aggregate as it was (it may be the process's cached workspace,
        domain/loading.py): the aggregate to save is the copy decided on, its facts pending (no
        copy and no second application of them), or, for a charge, a copy that records it."""
        if decision.charge is not None:
            kept = copy.deepcopy(self)
            kept.record(decision, ctx)
            return kept
        kept = decision.outcome
        kept._pending_events = [*self._pending_events, *decision.effects]  # a new workspace's first fact leads
        return kept

    def settle(self, invoice_id: str, result: ChargeResult, ctx: Context) -> LedgerError | None:
        """Record what the provider answered for a pending charge (R11, R12, R8)."""
        return billing.settle(self, invoice_id, result, ctx)

    def record_submission(self, invoice_id: str, reference: str, ctx: Context) -> None:
        """The provider's reference of a pending charge, recorded before it is confirmed."""
        billing.record_submission(self, invoice_id, reference, ctx)

    def process_due(self, ctx: Context, forecast: bool = False, *, recorded_pending: bool = False) -> None:
        """Record what fell due up to ctx.at; see domain/subscription/scheduler.py."""
        scheduler.process_due(self, ctx, forecast, recorded_pending=recorded_pending)

    def trigger(self, event_class: type[events.Event], ctx: Context, **fields: Any) -> None:
        self.trigger_event(event_class, **ctx.meta(), **fields)
