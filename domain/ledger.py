"""The Ledger application: loads a workspace, lets its aggregate decide, saves the facts,
and only then moves money (docs/payments.md).

Persistence comes from the eventsourcing environment (adapters/settings.py builds
it from a database URL); the clock and the payment gateway are ports passed in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.application import Application, EventSourcedLog
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import EventStore, IntegrityError
from eventsourcing.utils import resolve_topic

from domain import rules
from domain.catalog import Catalog, builtin_catalogs
from domain.commands import SYSTEM, Actor, Command, check_reason, check_workspace_id
from domain.clock import Clock, SystemClock, TestClock  # noqa: F401 (TestClock: re-exported)
from domain.errors import DECISION_ERRORS, AdvanceIncomplete, LedgerError, about_the_workspace, each_workspace
from domain.group_commit import GroupCommit
from domain.loading import Loading, project
from domain.payments import ChargeResult, NoPayments, PaymentGateway
from domain.positions import Positions
from domain.published_catalogs import PublishedCatalogs
from domain.quotes import Pin
from domain.settlement import MAX_ATTEMPTS, Settlement
from domain.subscription import Context, Subscription, workspace_uuid
from domain.subscription.billing import recorded_outcome
from domain.writers import PaymentsChosen, WriterChecks

MAX_DUE_ROUNDS = 1000
GROUP_COMMIT = "SUBLEDGER_GROUP_COMMIT"
"""Set to `n` to save every command in a transaction of its own (domain/group_commit.py)."""
SNAPSHOTS_TOPIC = "SUBLEDGER_SNAPSHOTS_TOPIC"
"""The topic of a wrapper of the snapshot recorder (adapters/settings.py names the one that prunes
and checks each snapshot against its digest), as APPLICATION_RECORDER_TOPIC names the recorder:
every Ledger made from the environment (commands, read-model runners, partition workers) loads
snapshots through it."""


UNREADABLE_DUE = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""The due index's instant for a workspace whose history fails to load when the index is first
built: due at every round, so `advance` names it until it is mended (version 0: its next save wins)."""


def due_instant(sub: Subscription) -> datetime | None:
    """When `advance` has something to do for this workspace: its next due item, or at once
    while a charge's outcome is still to be asked for."""
    due = sub.next_due_at()
    if sub.pending_charges and (due is None or sub.modified_on < due):
        return sub.modified_on
    return due


class WorkspaceListed(DomainEvent):
    """Appended to the workspace index when a workspace is first registered."""

    workspace_id: str


class LedgerCreated(DomainEvent):
    """The ledger database's first fact: which kind of clock writes it. Test time (scenarios,
    the demo) never enters a ledger kept on the system clock, nor the other way round."""

    clock: str


class CatalogPublished(DomainEvent):
    """A catalog version the ledger decided with, kept beside the events so that a workspace
    on a custom catalog can be read and advanced without the file it came from. v2 records
    its content hash: the id and version are claimed by this content and no other."""

    class_version = 2
    catalog_id: str
    version: str
    document: dict[str, Any]
    content_hash: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["content_hash"] = Catalog.model_validate(state["document"]).content_hash


@dataclass
class Result:
    """What a command did: the error (if refused or its payment failed), the events it recorded
    (a charge's outcome included), what fell due before it, and the aggregate after (to be read
    only: it may be the process's cached workspace, domain/loading.py)."""

    workspace_id: str
    error: LedgerError | None = None
    events: list[Subscription.Event] = field(default_factory=list)
    due_events: list[Subscription.Event] = field(default_factory=list)
    subscription: Subscription | None = None
    replayed: bool = False
    command_id: str | None = None
    version: int = 0
    """A preview's: the workspace's recorded version it was decided on (0: not registered yet)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def invoices(self) -> list[Subscription.InvoiceIssued]:
        return [e for e in self.events if isinstance(e, Subscription.InvoiceIssued)]


class Ledger(WriterChecks, PublishedCatalogs, Settlement, Positions, Loading, Application[UUID]):
    """Handle, preview, advance and settle payments (domain/settlement.py). Snapshots every 50
    events keep loads short."""

    name = "subledger"
    snapshotting_intervals: ClassVar[dict[type, int]] = {Subscription: 50}
    snapshotting_projectors: ClassVar[dict[type, Any]] = {Subscription: project}

    def __init__(self, env: Any = None, *, catalogs: dict[str, Catalog] | None = None,
                 default_catalog: str = "forms", clock: Clock | None = None,
                 payments: PaymentGateway | None = None) -> None:
        """Every argument but `env` has a default so that the library's projection runners,
        which construct the application from its class and environment, can read it."""
        super().__init__(env)
        self.catalogs = catalogs or builtin_catalogs()
        self.default_catalog = default_catalog
        self.clock = clock or SystemClock()
        self.payments: PaymentGateway = payments or NoPayments()
        self.index: EventSourcedLog[WorkspaceListed] = EventSourcedLog(
            self.events, workspace_uuid("__workspace_index__"), WorkspaceListed
        )
        self.catalog_log: EventSourcedLog[CatalogPublished] = EventSourcedLog(
            self.events, workspace_uuid("__catalog_log__"), CatalogPublished
        )
        self.ledger_log: EventSourcedLog[LedgerCreated] = EventSourcedLog(
            self.events, workspace_uuid("__ledger__"), LedgerCreated
        )
        self.payments_log: EventSourcedLog[PaymentsChosen] = EventSourcedLog(
            self.events, workspace_uuid("__payments__"), PaymentsChosen
        )
        self._init_positions()
        self._clock_recorded = False
        self._gateway_recorded = False
        grouped = str(self.env.get(GROUP_COMMIT) or "y").lower() not in ("n", "no", "0", "false", "off")
        self.committer = GroupCommit(self) if grouped else None
        self.due_index = callable(getattr(self.recorder, "due_workspaces", None))

    def construct_snapshot_store(self) -> EventStore[Any]:
        store = super().construct_snapshot_store()
        topic = self.env.get(SNAPSHOTS_TOPIC)
        if topic:
            store.recorder = resolve_topic(topic)(store.recorder, create_table=self.factory.env_create_table())
        return store

    def close(self) -> None:
        super().close()
        close_gateway = getattr(self.payments, "close", None)
        if callable(close_gateway):
            close_gateway()

    # --------------------------------------------------------------- reading

    def workspace_events(self, workspace_id: str, gt: int | None = None, lte: int | None = None) -> list[Any]:
        return list(self.events.get(workspace_uuid(workspace_id), gt=gt, lte=lte))

    def command_events(self, workspace_id: str, command_id: str, after: int = 0) -> list[Subscription.Event]:
        """Every fact one command recorded, its payment's outcome included, in order."""
        return [e for e in self.workspace_events(workspace_id, gt=after) if getattr(e, "command_id", None) == command_id]

    def workspaces(self) -> list[str]:
        return [e.workspace_id for e in self.index.get()]

    # --------------------------------------------------------------- writing

    def handle(self, workspace_id: str, command: Command, actor: Actor, *, channel: str = "api",
               idempotency_key: str | None = None, reason: str | None = None, pin: Pin | None = None) -> Result:
        """Decide and record one command on the named workspace alone (R1), then move its money.
        Refusals record nothing; pending charges are settled and due items recorded first. The
        command id minted here is kept across retries and carried by every fact the command records.
        With a quote's `pin`, the command is refused `quote_stale` unless it records the quoted lines."""
        check_workspace_id(workspace_id)
        if idempotency_key is not None:
            check_workspace_id(idempotency_key)
        check_reason(reason)
        self.check_clock()
        command_id = str(uuid4())
        args_hash = command.args_hash()
        due: list[Subscription.Event] = []
        fresh = False
        for _ in range(MAX_ATTEMPTS):
            loaded, checked = self.load_for_decision(workspace_id, fresh=fresh)
            loaded_version = loaded.version if loaded else 0
            fresh = True  # a retry decides on the workspace as the store holds it
            try:
                if loaded is not None:
                    loaded, caught, at = self._catch_up(loaded, shared=not checked)
                    due += caught
            except IntegrityError:
                continue
            sub = loaded or self._new(workspace_id, actor, channel)
            if loaded is None:
                at = self.clock.now()
            if idempotency_key:
                try:
                    seen = sub.idempotent_entry(idempotency_key, args_hash, at)
                except LedgerError as e:
                    if not checked:
                        continue
                    return Result(workspace_id, e, [], due, sub)
                if seen is not None:
                    if not checked:  # replayed with the workspace as the store holds it
                        continue
                    events = self._recorded(workspace_id, seen["command_id"], seen["first"], seen["last"])
                    return Result(workspace_id, recorded_outcome(events), events, due, sub, replayed=True,
                                  command_id=seen["command_id"])
            ctx = self._context(sub, actor, channel, command.name, reason, idempotency_key, args_hash, command_id, at)
            try:
                if pin is not None:  # who may not give the command hears that first, not of the quote
                    rules.check_actor(ctx.actor, command)
                    pin.check_quoted(loaded_version, ctx.catalog)
                decision = sub.decide(command, ctx)
                if pin is not None:
                    pin.check_lines(decision.effects)
            except LedgerError as e:
                if not checked:  # refused on this process's copy: decided again on the store's
                    continue
                return Result(workspace_id, e, [], due, sub)
            first = sub.version + 1
            sub = sub.kept(decision, ctx)
            events = list(sub.pending_events)
            try:  # a charge it asked for (a purchase's, or pay-invoice's) is settled on `sub`: cached as a copy
                self._save(sub, events, done=not asks_money(sub, command_id))
            except IntegrityError:
                if not self.command_events(workspace_id, command_id, after=first - 1):
                    continue
                sub = self.get(workspace_id) or sub  # it committed, though the database's answer was lost
            break
        else:
            return Result(workspace_id, LedgerError("concurrency_conflict", "the workspace kept changing: try again"))
        if not asks_money(sub, command_id):
            return Result(workspace_id, None, [e for e in events if isinstance(e, Subscription.Event)], due, sub,
                          command_id=command_id)
        settled = self._settle_command(sub, command_id)
        if settled is None:  # another writer came between: read what the command amounts to
            events = self.command_events(workspace_id, command_id, after=first - 1)
            sub = self.get(workspace_id) or sub
        else:
            sub, outcome = settled
            events = [*events, *outcome]
        return Result(workspace_id, recorded_outcome(events), events, due, sub, command_id=command_id)

    def preview(self, workspace_id: str, command: Command, actor: Actor, *, channel: str = "api") -> Result:
        """Decide the command on a copy with the clock pinned, every charge assumed paid, and
        save nothing (R25): the same decision as `handle`, so applying it yields these lines."""
        check_workspace_id(workspace_id)
        loaded = self.get(workspace_id)
        sub = loaded or self._new(workspace_id, actor, channel)
        ctx = self._context(sub, actor, channel, command.name, None, None, command.args_hash(), None)
        sub.process_due(ctx, forecast=True, recorded_pending=True)
        due = list(sub.pending_events)
        try:
            decision = sub.decide(command, ctx)
        except LedgerError as e:
            return Result(workspace_id, e, [], due, sub, version=loaded.version if loaded else 0)
        outcome = decision.outcome
        if decision.charge:
            outcome.trigger(Subscription.PaymentSucceeded, ctx, invoice_id=decision.charge.invoice_id,
                            amount=decision.charge.amount, charge_id=None, payment_method=decision.charge.payment_method)
        for invoice_id in [i for i in outcome.pending_charges if i not in sub.pending_charges]:
            outcome.settle(invoice_id, ChargeResult("succeeded"), ctx)  # an invoice it collects (pay-invoice, a final one)
        events = decision.effects + list(outcome.collect_events())
        return Result(workspace_id, None, [e for e in events if isinstance(e, Subscription.Event)], due, outcome,
                      version=loaded.version if loaded else 0)

    def advance_workspace(self, workspace_id: str, *, behind_waits: bool = False) -> list[Subscription.Event]:
        """Settle what is pending and record what fell due for one workspace up to now.
        `behind_waits`: a clock behind the workspace's last fact records nothing (a scheduler's
        later run gets it) instead of being refused or recording at that fact's instant."""
        self.check_clock()
        for _ in range(MAX_ATTEMPTS):
            sub = self.get(workspace_id)
            if sub is None or (behind_waits and sub.modified_on > self.clock.now()):
                return []
            try:
                return self._catch_up(sub)[1]
            except IntegrityError:
                continue
        raise LedgerError("concurrency_conflict", f"could not advance {workspace_id}")

    def advance(self) -> dict[str, list[Subscription.Event]]:
        """Record what fell due, for every workspace, up to the clock's now: with the due index
        (adapters/due_index.py), only the workspaces it lists as due. One whose last fact is
        after now waits for a later run (a test clock stepping from the first due instant,
        domain/clock.py first_stop; another host's skew): nothing is recorded before it. A
        workspace whose due items fail (refused, or a bug its history meets) is passed over and
        named at the end (AdvanceIncomplete): it never stops the others' renewals. A clock of
        another kind than the ledger's is refused even when nothing is due (clock_conflict)."""
        self.check_clock()
        done, failed = each_workspace(self.due_workspaces(),
                                      lambda ws: self.advance_workspace(ws, behind_waits=True))
        done = {ws: events for ws, events in done.items() if events}
        if failed:
            raise AdvanceIncomplete(done, failed) from next(iter(failed.values()))
        return done

    def due_workspaces(self, by: datetime | None = None) -> list[str]:
        """The workspaces with something due by now (or `by`). A ledger recorded before the due
        index existed is indexed first, once (each workspace loaded); without an index: all."""
        if not self.due_index:
            return self.workspaces()
        if not self.recorder.due_index_complete():
            for workspace_id in self.workspaces():
                try:
                    sub = self.get(workspace_id)
                except DECISION_ERRORS as e:  # a history broken by hand: due at once, so each round names it
                    if not about_the_workspace(e):
                        raise
                    self.recorder.record_due({workspace_uuid(workspace_id): (workspace_id, 0, UNREADABLE_DUE)})
                    continue
                if sub is not None:
                    self.recorder.record_due({sub.id: (workspace_id, sub.version, due_instant(sub))})
            self.recorder.mark_due_index_complete()
        return self.recorder.due_workspaces(by or self.clock.now())

    def resolve_payments(self, workspace_id: str | None = None) -> dict[str, list[Subscription.Event]]:
        """After a crash between a charge and its record: ask the gateway (by key) for every
        pending charge's outcome and record it (`subledger payments resolve`). Without a
        workspace, the due index lists the ones to visit: a pending charge makes its workspace
        due at once (`due_instant`), so none is missed and idle workspaces are not loaded."""
        if workspace_id:
            events = self.advance_workspace(workspace_id)
            return {workspace_id: events} if events else {}
        done, failed = each_workspace(self.due_workspaces(), self.advance_workspace)
        done = {ws: events for ws, events in done.items() if events}
        if failed:
            raise AdvanceIncomplete(done, failed, "every other workspace's pending charges were resolved") \
                from next(iter(failed.values()))
        return done

    # ------------------------------------------------------------- catching up

    def _catch_up(self, sub: Subscription, *,
                  shared: bool = False) -> tuple[Subscription, list[Subscription.Event], datetime]:
        """Settle pending charges and record what fell due, in turns, until neither moves; each
        step is saved as it goes. Returns the workspace after, what it recorded, and the instant
        at which nothing more was due: a command decided at that instant follows everything due
        by then. `shared`: `sub` is the process's cached workspace (Loading.load_for_decision), to
        be read only: the work, if the one look at the clock finds any, is done on a copy. Raises
        IntegrityError when another writer got there first."""
        now = self._not_before(sub, self.clock.now())  # before any gateway call
        if not sub.pending_charges and not self._is_due(sub, now):
            return sub, [], now
        if shared:
            sub = copy.deepcopy(sub)
        recorded: list[Subscription.Event] = []
        for _ in range(MAX_DUE_ROUNDS):
            settled = self._settle(sub, blocking_due=True)  # an answer may make something due: its window's end
            recorded += settled
            ctx = self._context(sub, SYSTEM, "scheduler", "advance", None, None, None, str(uuid4()))
            sub.process_due(ctx)
            events = list(sub.pending_events)
            if not events and not settled:
                return sub, recorded, ctx.at
            if events:
                self._save(sub, events)
                recorded += events
        raise LedgerError("concurrency_conflict", "too many rounds of due items and payments: is the clock sane?")

    @staticmethod
    def _is_due(sub: Subscription, now: datetime) -> bool:
        """Whether an item fell due by `now`: most commands find none, and skip making a context for it."""
        due = sub.next_due_at()
        return due is not None and due <= now

    # --------------------------------------------------------------- helpers

    def _recorded(self, workspace_id: str, command_id: str | None, first: int, last: int) -> list[Any]:
        if command_id is None:  # recorded before commands had ids: the key's range of versions
            return self.workspace_events(workspace_id, gt=first - 1, lte=last)
        return self.command_events(workspace_id, command_id, after=first - 1)

    def _context(self, sub: Subscription, actor: Actor, channel: str, cause: str, reason: str | None,
                 key: str | None, args_hash: str | None, command_id: str | None, at: datetime | None = None) -> Context:
        return Context(actor, channel, self._not_before(sub, at or self.clock.now()), self.catalog_for(sub), cause,
                       reason, key, args_hash, command_id)

    def _not_before(self, sub: Subscription, at: datetime) -> datetime:
        """Nothing is recorded at an instant before the workspace's last fact (scheduler facts
        excepted: each is stamped at the instant it fell due). A test clock set before it is
        refused (clock_conflict): somebody pinned the wrong instant, or another worker moved a
        shared test clock meanwhile (a retry follows it). The system clock can only be behind it
        by another host's skew, a few milliseconds: the fact takes the last one's instant."""
        last = sub.modified_on
        if at >= last:
            return at
        if self.clock.kind == "system":
            return last
        raise LedgerError("clock_conflict", f"the clock reads {at.isoformat()}, before {sub.workspace_id}'s last "
                          f"recorded fact at {last.isoformat()}: nothing is recorded before it")

    def _new(self, workspace_id: str, actor: Actor, channel: str) -> Subscription:
        catalog = self.catalog_for(None)
        ctx = Context(actor, channel, self.clock.now(), catalog, "register")
        return Subscription._create(
            Subscription.WorkspaceRegistered, id=workspace_uuid(workspace_id), workspace_id=workspace_id,
            catalog_id=catalog.id, **ctx.meta(),
        )

    def _save(self, sub: Subscription, events: list[Any], *, done: bool = False) -> None:
        """Save the aggregate with, atomically, its index entry, any catalog version first used,
        and for a new ledger the kind of clock that writes it. `done`: the command changes `sub`
        no more, so the cache may keep it itself (Loading.remember)."""
        logged: list[Any] = self._unpublished(self.catalog_for(sub))
        if not self._clock_recorded:
            self.check_clock()
            if not self._clock_recorded:
                logged.append(self.ledger_log.trigger_event(clock=self.clock.kind))
        if not self._gateway_recorded and self.gateway_kind() is not None:
            self.check_payments()
            if not self._gateway_recorded:
                logged.append(self.payments_log.trigger_event(gateway=self.gateway_kind()))
        if any(isinstance(e, Subscription.WorkspaceRegistered) for e in events):
            logged.append(self.index.trigger_event(workspace_id=sub.workspace_id))
        due = {sub.id: (sub.workspace_id, sub.version, due_instant(sub))} if self.due_index else {}
        try:
            if self.committer is not None:
                self.committer.save(sub, *logged, **({"due": due} if due else {}))
            else:
                self.save(sub, *logged, **({"due": due} if due else {}))
        except BaseException:
            self._published = None
            self.forget(sub)
            raise
        self.remember(sub, done=done)
        self._clock_recorded = True
        self._gateway_recorded = self._gateway_recorded or self.gateway_kind() is not None
        self._now_published(logged)


def asks_money(sub: Subscription, command_id: str) -> bool:
    """Whether the command left a charge pending on the workspace, which settling it goes on to change."""
    return any(p["requested_by"]["command_id"] == command_id for p in sub.pending_charges.values())
