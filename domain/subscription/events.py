"""The facts of a subscription's plan, seats and storage: past-tense events, and how each one
changes the aggregate. AI credit and operations facts are in usage_events.py, money facts
(invoices, charges, payments) in billing_events.py.

Events are immutable and versioned (`class_version` with the library's upcasting); a
correction is a new event, never an edit. The aggregate decides which facts to record;
these classes only apply them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate, OriginatorVersionError

from domain.errors import LedgerError
from domain.periods import add_months

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

KEY_RETENTION = timedelta(days=30)
"""How long a workspace remembers an idempotency key, from the command that first used it:
long enough for any retry (Stripe keeps its keys 24 hours), short enough that the key map
stays bounded by a month of keyed commands instead of growing with history."""


class Event(Aggregate.Event):
    """Every fact carries who (actor id and role), when (timestamp), through which channel,
    why (cause, optional reason), the command that recorded it (command id, idempotency key)
    and the catalog it used: version and content hash (R3).

    v2 added `command_id` and `catalog_hash`; older facts read them as None."""

    class_version = 2
    actor_id: str
    actor_role: str
    channel: str
    cause: str
    reason: str | None
    idempotency_key: str | None
    args_hash: str | None
    catalog_version: str
    command_id: str | None
    catalog_hash: str | None

    def mutate(self, aggregate: Any) -> Any:
        """A stream with a gap (an event deleted or renumbered by hand) is a broken chain, named
        with its workspace and the versions it skips wherever it is folded (loading, read models,
        replay, advance), where the library's bare OriginatorVersionError read as an internal error."""
        if aggregate is None and not isinstance(self, Aggregate.Created):
            raise _gap("a workspace's stored events", 0, self.originator_version)
        try:
            return super().mutate(aggregate)
        except OriginatorVersionError:
            raise _gap(f"the stored events of {aggregate.workspace_id}", aggregate.version,
                       self.originator_version) from None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["command_id"] = None
        state["catalog_hash"] = None

    def apply(self, sub: Subscription) -> None:
        sub.catalog_version = self.catalog_version
        if self.idempotency_key:
            forget_keys(sub, self.timestamp)
            entry = sub.idempotency.get(self.idempotency_key)
            if entry is None or forgotten(entry, self.timestamp):
                sub.idempotency.pop(self.idempotency_key, None)  # a forgotten key used anew goes to the back
                entry = sub.idempotency[self.idempotency_key] = {
                    "hash": self.args_hash, "first": self.originator_version, "last": self.originator_version,
                    "command_id": self.command_id, "at": self.timestamp,
                }
            if entry["command_id"] == self.command_id:  # not a late settlement of the key's previous command
                entry["last"] = self.originator_version


def forget_keys(sub: Subscription, now: datetime) -> None:
    """Drop the keys first used more than KEY_RETENTION before `now`. Keys are kept in the order
    first used, so the expired ones are at the front and the rest is never scanned."""
    keys = sub.idempotency
    while keys:
        oldest = next(iter(keys))
        if not forgotten(keys[oldest], now):
            break
        del keys[oldest]


def forgotten(entry: Any, now: datetime) -> bool:
    """Whether a key's entry was first used more than KEY_RETENTION before `now`."""
    return bool(entry["at"] < now - KEY_RETENTION)


def _gap(whose: str, reached: int, found: int) -> LedgerError:
    return LedgerError("event_chain_broken", f"{whose} go from version {reached} to {found}: an event was deleted "
                       "or moved by hand. Run `subledger audit verify`")


class WorkspaceRegistered(Aggregate.Created, Event):
    """The workspace's first fact: its id and the catalog it is billed on."""

    workspace_id: str
    catalog_id: str


class PlanSet(Event):
    """Base of every event that puts the workspace on a plan; `new_cycle` restarts the period."""

    from_plan: str | None
    plan: str
    tier: int | None
    interval: str | None
    seats: int | None
    unit_price: Decimal | None
    new_cycle: bool
    period_start: datetime | None
    period_end: datetime | None
    addon_price: Decimal | None
    ops_allotment: int | None
    kept_team: str | None
    seats_paid: int | None
    """Seats paid for in this period after the change, as the decision worked it out (R21).
    v3 added it; an older fact derives it the way v2 did."""

    class_version = 3

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["seats_paid"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.plan, sub.tier, sub.interval, sub.seats = self.plan, self.tier, self.interval, self.seats
        sub.kept_team = self.kept_team or sub.kept_team
        sub.scheduled = None
        for key in [k for k in sub.charged if k.startswith("seat_changes_")]:
            del sub.charged[key]  # the old plan's seat lines were settled with it (pricing.seat_change)
        if self.new_cycle:
            sub.anchor = self.period_start
            sub.period_start, sub.period_end = self.period_start, self.period_end
            sub.prices = {"addon": self.addon_price} if self.addon_price else {}
            sub.ops_extra = 0
            sub.ops_reset_at = None
            if self.unit_price is None:
                sub.storage_addon = None
        if self.seats_paid is not None:
            sub.seats_paid = self.seats_paid
        else:
            fresh = self.new_cycle or self.unit_price is not None
            sub.seats_paid = (self.seats or 0) if fresh else max(sub.seats_paid, self.seats or 0)
        if self.unit_price is not None:
            sub.prices["plan"] = self.unit_price
        else:
            sub.prices.pop("plan", None)
        if self.ops_allotment is not None:
            sub.ops_allotment = self.ops_allotment
            if self.new_cycle and self.interval == "year" and self.period_start and self.tier:
                sub.ops_reset_at = add_months(self.period_start, 1)
        sub.status = "past_due" if sub.open_invoices() else "active"

class Subscribed(PlanSet):
    pass

class TrialStarted(PlanSet):
    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.status = "trialing"
        sub.trial_used = True

class TrialConverted(PlanSet):
    pass

class TrialExpired(PlanSet):
    pass

class PlanUpgraded(PlanSet):
    pass

class IntervalChanged(PlanSet):
    pass

class TierChanged(PlanSet):
    """A bigger operations tier of the same plan (R16), e.g. Core 120,000/yr -> 240,000/yr."""

    from_tier: int | None

class DowngradeApplied(PlanSet):
    pass

class DowngradeScheduled(Event):
    plan: str
    tier: int | None
    interval: str | None
    seats: int | None
    keep_team: str | None
    effective_at: datetime
    notice_at: datetime

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.scheduled = {
            "kind": "downgrade", "plan": self.plan, "tier": self.tier, "interval": self.interval,
            "seats": self.seats, "keep_team": self.keep_team, "effective_at": self.effective_at,
            "notice_at": self.notice_at, "noticed": False,
        }

class DowngradeCancelled(Event):
    plan: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.scheduled = None

class DowngradeNoticeDue(Event):
    plan: str
    effective_at: datetime

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        if sub.scheduled:
            sub.scheduled["noticed"] = True

class CancellationScheduled(Event):
    effective_at: datetime

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.scheduled = {"kind": "cancel", "plan": None, "effective_at": self.effective_at, "noticed": True}
        sub.status = "cancel_scheduled"

class CancellationCancelled(Event):
    """A scheduled cancellation withdrawn ("keep current plan", R17, or a change that replaces
    it). `status`: the workspace's status after it, as decided; v3 added it, since a v2 fact set
    `past_due` or `active` even over dunning's suspension (R8, R19), and an older fact still does."""

    class_version = 3
    status: str | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["status"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.scheduled = None
        sub.status = self.status or ("past_due" if sub.open_invoices() else "active")

class SubscriptionCanceled(Event):
    plan: str | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.status = "canceled"
        sub.scheduled = None
        sub.period_end = None
        sub.ops_allotment = sub.ops_extra = sub.ops_carried = 0
        sub.ai_granted = sub.ai_worth = sub.ai_rate = 0
        sub.ai_grant_at = None
        sub.prices = {}
        sub.storage_addon = None

class WorkspaceSuspended(Event):
    """Dunning's final action `suspend` (R8, R19): the last retry of `invoice_id` failed; paid
    features are locked and nothing renews until every open invoice is paid."""

    invoice_id: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.status = "suspended"


class WorkspaceReactivated(Event):
    """Every open invoice of a suspended workspace is paid: it is active again. `restart_at`: the
    period ran out while suspended, so a new one is anchored there (the scheduler renews it). One
    recorded on a free plan (before dunning.after_payment knew it has no period) anchors nothing.
    `status`: `cancel_scheduled` when a cancellation is still scheduled, else `active`; v3 added
    it, since a v2 fact read `active` over a scheduled cancellation, and an older fact still does."""

    class_version = 3
    restart_at: datetime | None
    status: str | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["status"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.status = self.status or "active"
        if self.restart_at is not None and sub.interval:
            sub.anchor = sub.period_end = self.restart_at


class PeriodRenewed(Event):
    period_start: datetime
    period_end: datetime
    seats: int | None
    unit_price: Decimal
    addon_price: Decimal | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.period_start, sub.period_end = self.period_start, self.period_end
        sub.seats_paid = self.seats or 0
        sub.prices = {"plan": self.unit_price} | ({"addon": self.addon_price} if self.addon_price else {})
        sub.charged = {k: v for k, v in sub.charged.items() if k.endswith(self.period_end.isoformat())}

class SeatsChanged(Event):
    """`scheduled_seats`: the seats a scheduled per-seat downgrade now starts with (the last
    seat count chosen, R17, R21), or None when none is scheduled. v3 added it. v4 added the
    period's seat changes after this one, their exact sum and what their lines billed
    (pricing.seat_change), or None when no seat was priced."""

    class_version = 4
    seats: int
    previous: int | None
    unit_price: Decimal | None
    scheduled_seats: int | None
    seat_changes_exact: Decimal | None
    seat_changes_billed: Decimal | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["scheduled_seats"] = None

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        state["seat_changes_exact"] = state["seat_changes_billed"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.seats = self.seats
        sub.seats_paid = max(sub.seats_paid, self.seats)
        if self.scheduled_seats is not None and sub.scheduled:
            sub.scheduled["seats"] = self.scheduled_seats
        if self.seat_changes_exact is not None and self.seat_changes_billed is not None and sub.period_end:
            period = sub.period_end.isoformat()
            sub.charged[f"seat_changes_exact@{period}"] = self.seat_changes_exact
            sub.charged[f"seat_changes_billed@{period}"] = self.seat_changes_billed

class MembersChanged(Event):
    class_version = 3
    members: int
    previous: int | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """v1 recorded only the new count."""
        state["previous"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        Event.upcast_v1_v2(state)

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.members = self.members

class StorageUsageReported(Event):
    gb: Decimal

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.storage_used = self.gb

class StorageAddonChanged(Event):
    addon: str | None
    previous: str | None
    unit_price: Decimal | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.storage_addon = self.addon
        if self.unit_price is None:
            sub.prices.pop("addon", None)
        else:
            sub.prices["addon"] = self.unit_price
