"""The Ledger application: loads a workspace, lets its aggregate decide, saves the facts.

Persistence comes from the eventsourcing environment (adapters/settings.py builds
it from a database URL); the clock and the payment gateway are ports passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, EventSourcedLog
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError

from domain.catalog import Catalog, builtin_catalogs
from domain.commands import SYSTEM, Actor, Command, check_workspace_id
from domain.errors import LedgerError
from domain.payments import NoPayments, PaymentGateway, PreviewPayments
from domain.subscription import Context, Subscription, charge_declined, payment_failed, workspace_uuid

MAX_ATTEMPTS = 5


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Production time: the system's UTC clock. It cannot be set, so nothing is backdated."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class TestClock:
    """Simulated time for tests, scenarios and the demo. It only moves forward."""

    __test__ = False

    def __init__(self, start: datetime) -> None:
        self._now = _utc(start)

    def now(self) -> datetime:
        return self._now

    def move_to(self, at: datetime) -> None:
        at = _utc(at)
        if at < self._now:
            raise LedgerError("invalid_request", f"the test clock never goes back: {at.isoformat()} < {self._now.isoformat()}")
        self._now = at


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise LedgerError("invalid_request", f"instant {at.isoformat()} needs a timezone (e.g. Z)")
    return at.astimezone(timezone.utc)


class WorkspaceListed(DomainEvent):
    """Appended to the workspace index when a workspace is first registered."""

    workspace_id: str


class CatalogPublished(DomainEvent):
    """A catalog version the ledger decided with, kept beside the events so that a workspace
    on a custom catalog can be read and advanced without the file it came from."""

    catalog_id: str
    version: str
    document: dict[str, Any]


@dataclass
class Result:
    """What a command did: the error (if refused), the events it recorded, the aggregate after."""

    workspace_id: str
    error: LedgerError | None = None
    events: list[Subscription.Event] = field(default_factory=list)
    due_events: list[Subscription.Event] = field(default_factory=list)
    subscription: Subscription | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def invoices(self) -> list[Subscription.InvoiceIssued]:
        return [e for e in self.events if isinstance(e, Subscription.InvoiceIssued)]


class Ledger(Application[UUID]):
    """Handle, preview and advance. Snapshots every 50 events keep loads short."""

    name = "subledger"
    snapshotting_intervals: ClassVar[dict[type, int]] = {Subscription: 50}

    def __init__(self, env: Any = None, *, catalogs: dict[str, Catalog] | None = None,
                 default_catalog: str = "forms", clock: Clock | None = None,
                 payments: PaymentGateway | None = None) -> None:
        """Every argument but `env` has a default so that the library's projection runners,
        which construct the application from its class and environment, can read it."""
        super().__init__(env)
        self.catalogs = catalogs or builtin_catalogs()
        self.default_catalog = default_catalog
        self.clock = clock or SystemClock()
        self.payments = payments or NoPayments()
        self.index: EventSourcedLog[WorkspaceListed] = EventSourcedLog(
            self.events, workspace_uuid("__workspace_index__"), WorkspaceListed
        )
        self.catalog_log: EventSourcedLog[CatalogPublished] = EventSourcedLog(
            self.events, workspace_uuid("__catalog_log__"), CatalogPublished
        )
        self._published: set[tuple[str, str]] | None = None

    # --------------------------------------------------------------- reading

    def get(self, workspace_id: str, at: datetime | None = None) -> Subscription | None:
        """The workspace now, or as it was at `at` (replaying its events up to that instant)."""
        check_workspace_id(workspace_id)
        try:
            sub = self.repository.get(workspace_uuid(workspace_id))
        except AggregateNotFoundError:
            return None
        if at is None or sub.modified_on <= at:
            return sub
        version = max((e.originator_version for e in self.workspace_events(workspace_id) if e.timestamp <= at), default=0)
        return self.repository.get(workspace_uuid(workspace_id), version=version) if version else None

    def workspace_events(self, workspace_id: str, gt: int | None = None, lte: int | None = None) -> list[Any]:
        return list(self.events.get(workspace_uuid(workspace_id), gt=gt, lte=lte))

    def workspaces(self) -> list[str]:
        return [e.workspace_id for e in self.index.get()]

    def catalog_for(self, sub: Subscription | None) -> Catalog:
        catalog_id = sub.catalog_id if sub else self.default_catalog
        if catalog_id not in self.catalogs:
            published = [e for e in self.catalog_log.get() if e.catalog_id == catalog_id]
            if not published:
                raise LedgerError("invalid_request", f"catalog {catalog_id!r} is neither loaded nor published")
            self.catalogs[catalog_id] = Catalog.model_validate(published[-1].document)
        return self.catalogs[catalog_id]

    def _unpublished(self, catalog: Catalog) -> list[CatalogPublished]:
        if self._published is None:
            self._published = {(e.catalog_id, e.version) for e in self.catalog_log.get()}
        if (catalog.id, catalog.version) in self._published:
            return []
        return [self.catalog_log.trigger_event(catalog_id=catalog.id, version=catalog.version,
                                               document=catalog.model_dump(mode="json"))]

    # --------------------------------------------------------------- writing

    def handle(self, workspace_id: str, command: Command, actor: Actor, *, channel: str = "api",
               idempotency_key: str | None = None, reason: str | None = None) -> Result:
        """Decide and record one command. Refusals record nothing; due items are recorded first."""
        check_workspace_id(workspace_id)
        if idempotency_key is not None:
            check_workspace_id(idempotency_key)
        due: list[Subscription.Event] = []
        for _ in range(MAX_ATTEMPTS):
            loaded = self.get(workspace_id)
            try:
                due += self._record_due(loaded) if loaded else []
            except IntegrityError:
                continue
            sub = loaded or self._new(workspace_id, actor, channel)
            key_hash = command.args_hash()
            if idempotency_key and not sub.pending_events:
                try:
                    seen = sub.idempotent_result(idempotency_key, key_hash)
                except LedgerError as e:
                    return Result(workspace_id, e, [], due, sub)
                if seen is not None:
                    events = self.workspace_events(workspace_id, gt=seen[0] - 1, lte=seen[1])
                    return Result(workspace_id, _recorded_refusal(events), events, due, sub, replayed=True)
            ctx = self._context(sub, actor, channel, command.name, reason, idempotency_key, key_hash, self.payments)
            try:
                error = sub.execute(command, ctx)
            except LedgerError as e:
                return Result(workspace_id, e, [], due, self.get(workspace_id))
            events = list(sub.pending_events)
            try:
                self._save(sub, events)
            except IntegrityError:
                continue
            return Result(workspace_id, error, [e for e in events if isinstance(e, Subscription.Event)], due, sub)
        return Result(workspace_id, LedgerError("concurrency_conflict", "the workspace kept changing: try again"))

    def preview(self, workspace_id: str, command: Command, actor: Actor, *, channel: str = "api") -> Result:
        """Run the command on a copy with the clock pinned and collect its events unsaved (R25):
        the same code path as `handle`, so applying it yields exactly these lines."""
        check_workspace_id(workspace_id)
        sub = self._load_or_register(workspace_id, actor, channel)
        ctx = self._context(sub, actor, channel, command.name, None, None, command.args_hash(), PreviewPayments())
        sub.process_due(ctx)
        due = list(sub.pending_events)
        try:
            error = sub.execute(command, ctx)
        except LedgerError as e:
            return Result(workspace_id, e, [], due, sub)
        events = [e for e in sub.pending_events[len(due):] if isinstance(e, Subscription.Event)]
        return Result(workspace_id, error, events, due, sub)

    def advance_workspace(self, workspace_id: str) -> list[Subscription.Event]:
        """Record what fell due for one workspace up to the clock's now."""
        for _ in range(MAX_ATTEMPTS):
            sub = self.get(workspace_id)
            if sub is None:
                return []
            try:
                return self._record_due(sub)
            except IntegrityError:
                continue
        raise LedgerError("concurrency_conflict", f"could not advance {workspace_id}")

    def _record_due(self, sub: Subscription) -> list[Subscription.Event]:
        """Record on `sub` what fell due up to now; `sub` stays usable for the next decision.
        Raises IntegrityError when another writer got there first."""
        sub.process_due(self._context(sub, SYSTEM, "scheduler", "advance", None, None, None, self.payments))
        events = list(sub.pending_events)
        if events:
            self._save(sub, events)
        return events

    def advance(self) -> dict[str, list[Subscription.Event]]:
        """Record what fell due, for every workspace, up to the clock's now."""
        done = {}
        for workspace_id in self.workspaces():
            events = self.advance_workspace(workspace_id)
            if events:
                done[workspace_id] = events
        return done

    # --------------------------------------------------------------- helpers

    def _context(self, sub: Subscription, actor: Actor, channel: str, cause: str, reason: str | None,
                 key: str | None, args_hash: str | None, payments: PaymentGateway) -> Context:
        return Context(actor, channel, self.clock.now(), self.catalog_for(sub), payments, cause, reason, key, args_hash)

    def _new(self, workspace_id: str, actor: Actor, channel: str) -> Subscription:
        catalog = self.catalog_for(None)
        ctx = Context(actor, channel, self.clock.now(), catalog, self.payments, "register")
        return Subscription._create(
            Subscription.WorkspaceRegistered, id=workspace_uuid(workspace_id), workspace_id=workspace_id,
            catalog_id=catalog.id, **ctx.meta(),
        )

    def _load_or_register(self, workspace_id: str, actor: Actor, channel: str) -> Subscription:
        return self.get(workspace_id) or self._new(workspace_id, actor, channel)

    def _save(self, sub: Subscription, events: list[Any]) -> None:
        """Save the aggregate with, atomically, its index entry and any catalog version first used."""
        logged: list[Any] = self._unpublished(self.catalog_for(sub))
        if any(isinstance(e, Subscription.WorkspaceRegistered) for e in events):
            logged.append(self.index.trigger_event(workspace_id=sub.workspace_id))
        try:
            self.save(sub, *logged)
        except IntegrityError:
            self._published = None
            raise
        self._published = (self._published or set()) | {(e.catalog_id, e.version) for e in logged
                                                           if isinstance(e, CatalogPublished)}


def _recorded_refusal(events: list[Any]) -> LedgerError | None:
    """The error a replayed command first returned: a declined charge is its only recorded refusal."""
    for event in events:
        if isinstance(event, Subscription.ChargeDeclined):
            return charge_declined(event.amount, event.decline_code)
        if isinstance(event, Subscription.PaymentFailed):
            return payment_failed(event.amount, event.message)
    return None
