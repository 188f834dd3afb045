"""The base of every read model: an eventsourcing `Projection` whose view is a tracking
recorder, and the fold that gives it the workspace's aggregate before and after an event.

Exactly-once comes from the library's tracking: each batch of events and the tracking
position of its last event commit in one transaction of the view's database; a batch
that was already projected (by a crashed run or another process) is skipped.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.catalog import Catalog
from domain.subscription import Subscription
from projections import partition_keys
from projections.partition_keys import Partition
from projections.store import ReadModelView


class Fold:
    """Each workspace's Subscription as of the event being projected, folded forward with
    the aggregate's own `apply` (so a read model never re-implements a state rule), once per
    event for every read model projecting it together (`project_together`).

    A cache miss (a restart, another process having moved on, a workspace evicted to keep
    memory flat) loads the aggregate at the version just before the event from the ledger's
    repository. `state` renders the plan-state document once per workspace version."""

    def __init__(self, source: Any, keep: int = 2000) -> None:
        self.source = source
        self.keep = keep
        self.subs: OrderedDict[UUID, Subscription] = OrderedDict()
        self.states: dict[UUID, tuple[int, dict[str, Any]]] = {}
        self.seen: dict[UUID, dict[int, Subscription.Event]] = {}
        """This batch's events by workspace and version, so a read model rarely reads the store."""
        self.catalogs: dict[str, Catalog] = {}

    def before(self, event: Subscription.Event) -> Subscription | None:
        want = event.originator_version - 1
        sub = self.subs.get(event.originator_id)
        if sub is not None and sub.version == want:
            self.subs.move_to_end(event.originator_id)
            return sub
        if want < 1:
            return None
        return self.source.repository.get(event.originator_id, version=want)

    def apply(self, event: Subscription.Event, sub: Subscription | None) -> Subscription:
        after = event.mutate(sub)
        assert isinstance(after, Subscription)
        self.subs[event.originator_id] = after
        self.subs.move_to_end(event.originator_id)
        while len(self.subs) > self.keep:
            gone, _ = self.subs.popitem(last=False)
            self.states.pop(gone, None)
        return after

    def catalog(self, sub: Subscription) -> Catalog:
        """The workspace's catalog, looked up (and checked against the ledger) once per batch."""
        found = self.catalogs.get(sub.catalog_id)
        if found is None:
            found = self.catalogs[sub.catalog_id] = self.source.catalog_for(sub)
        return found

    def catalog_of(self, event: Subscription.Event, sub: Subscription) -> Catalog:
        """The catalog the event was decided with (its recorded `catalog_version`), else the
        workspace's: a policy read from a later version would restate the fact."""
        key = getattr(event, "catalog_version", None)
        if key is None:
            return self.catalog(sub)
        found = self.catalogs.get(key)
        if found is None:
            found = self.catalogs[key] = self.source.catalog_recorded(key) or self.catalog(sub)
        return found

    def state(self, sub: Subscription) -> dict[str, Any]:
        """The `state` document (projections/views.py) of `sub`, rendered once per version."""
        from projections.views import plan_state  # views imports the read models

        found = self.states.get(sub.id)
        if found is not None and found[0] == sub.version:
            return found[1]
        doc = plan_state(sub, self.catalog(sub))
        if len(self.states) > 2 * self.keep:  # rendered for aggregates the fold no longer holds
            self.states = {k: v for k, v in self.states.items() if k in self.subs}
        self.states[sub.id] = (sub.version, doc)
        return doc

    def index(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        self.seen, self.catalogs = {}, {}
        for event, _ in batch:
            if isinstance(event, Subscription.Event):
                self.seen.setdefault(event.originator_id, {})[event.originator_version] = event

    def forget(self) -> None:
        self.subs.clear()
        self.states.clear()
        self.seen.clear()
        self.catalogs.clear()


class Step(NamedTuple):
    """What a read model's `project` reads besides the event: the aggregate just after it (the
    fold's, moved on in place by later events) and what its `note` kept of the state before.
    (A tuple: one is made per event and read model.)"""

    sub: Subscription
    note: Any = None


class ReadModel(Projection[ReadModelView]):
    """One read model. Subclasses set `family` and `version`, define their tables with
    `define`, keep what they need of the state before an event with `note`, and write one
    event's effect with `project` (reading `self.current`).

    The library's `name` (environment prefix and tracking table) is set per bound table
    set, e.g. `rm_plan_state_v1`, so a rebuild into new tables gets a new tracking table."""

    family: ClassVar[str] = ""
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[str, ...]] = ()
    tag: ClassVar[str] = ""
    source: ClassVar[Any] = None
    application_name: ClassVar[str] = "subledger"

    def __init__(self, view: ReadModelView, source: Any = None) -> None:
        super().__init__(view)
        self.fold = Fold(source or type(self).source)
        self.current = Step(None)  # type: ignore[arg-type]
        self.committed: int | None = None
        """The position this instance last committed: caches kept across batches are valid
        only while the position found under the lock is still this one."""

    @classmethod
    def bound(cls, tag: str, source: Any = None) -> tuple[type[ReadModel], type[ReadModelView]]:
        """This read model writing to its tables of `tag` (e.g. 'v1'), folding from `source`."""
        name = f"rm_{cls.family}_{tag}"
        projection = type(f"{cls.__name__}_{tag}", (cls,), {"name": name, "tag": tag, "source": source})
        view = type(f"{cls.__name__}View_{tag}", (ReadModelView,), {"model": cls, "tag": tag})
        return projection, view

    @classmethod
    def table_name(cls, table: str, tag: str) -> str:
        """rm_<table>_<tag> holds a version's rows; rm_<table> (no tag) is the stable SQL view
        over the active version, the name downstream services query."""
        return f"rm_{table}_{tag}" if tag else f"rm_{table}"

    @classmethod
    def stable(cls) -> dict[str, Table]:
        """The read model's tables as the stable views: for reading, whatever version is live."""
        if "_stable" not in cls.__dict__:
            cls._stable = cls.define(MetaData(), "")
        return cls._stable  # type: ignore[no-any-return]

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        """The read model's tables for `tag`, keyed by their public name."""
        raise NotImplementedError

    @classmethod
    def on_activate(cls, conn: Connection, tag: str) -> None:
        """Called in the transaction that makes the `tag` tables live: re-point what else depends
        on them (e.g. a view joining data kept outside the rebuildable tables)."""

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        """The library's entry point (ProjectionRunner): one event, one transaction."""
        self.process_batch([(domain_event, tracking)])

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> int:
        """Project events in notification order and record the last position, atomically.
        Returns how many events were new."""
        return project_together([self], self.fold, batch)[self.family]

    def note(self, before: Subscription | None, event: Subscription.Event) -> Any:
        """What `project` will need of the state before `event` (the fold then moves it on)."""
        return None

    def begin(self, session: Session) -> None:
        """Called at the start of a batch's transaction (drop per-batch caches here)."""

    def finish(self, session: Session) -> None:
        """Called at the end of a batch, before its position is recorded: write what was
        buffered (rows are written in bulk, and per-workspace rows once, at their last state)."""

    def abort(self) -> None:
        """Called when a batch's transaction failed (drop caches that may be ahead)."""

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        raise NotImplementedError


def project_together(projections: Sequence[ReadModel], fold: Fold,
                     batch: Sequence[tuple[Any, Tracking]], *, partition: Partition | None = None,
                     through: int | None = None) -> dict[str, int]:
    """Project a batch into several read models of one database in one transaction: each event
    is folded once and given to every read model whose position is before it, and each read
    model's tracking position is recorded with its rows (the positions are read under each
    read model's write lock, so a batch already projected elsewhere is skipped).
    Returns how many events each read model took.

    `partition`: the batch holds only that partition's events (projections/partition_keys.py),
    and the position recorded is the partition's, `through` (the last notification scanned, its
    own or not), so that a partition recording an empty stretch still moves on."""
    taken = {p.family: 0 for p in projections}
    if not projections or (not batch and through is None):
        return taken
    end = through if through is not None else batch[-1][1].notification_id
    try:
        with projections[0].view.transaction(commit=True) as session:
            positions = {}
            for p in projections:
                rows = p.view.lock_positions(session, partition and f"{partition.k}/{partition.n}")
                position = partition_keys.position(rows, p.application_name, partition)
                if position != p.committed:
                    p.abort()
                positions[p.family] = position or 0
            active = [p for p in projections if end > positions[p.family]]
            if not active:
                return taken
            fold.index(batch)
            for p in active:
                p.begin(session)
            ids = [tracking.notification_id for _, tracking in batch]
            for p in active:
                taken[p.family] = len(ids) - bisect_right(ids, positions[p.family])
            everyone = max(positions[p.family] for p in active)
            """Past this position every active read model takes every event (the usual case)."""
            for event, tracking in batch:
                if not isinstance(event, Subscription.Event):
                    continue
                position = tracking.notification_id
                takers = active if position > everyone else [p for p in active if position > positions[p.family]]
                if not takers:
                    continue
                before = fold.before(event)
                notes = [p.note(before, event) if type(p).note is not _NO_NOTE else None for p in takers]
                sub = fold.apply(event, before)
                for p, note in zip(takers, notes):
                    p.current = Step(sub, note)
                    p.project(session, event, tracking)
            last = Tracking(partition.tracking_name(projections[0].application_name), end) \
                if partition is not None else batch[-1][1]
            for p in active:
                p.finish(session)
                p.view.record_position(session, last)
    except BaseException:
        fold.forget()
        for p in projections:
            p.committed = None
            p.abort()
        raise
    for p in active:
        p.committed = end
    return taken


_NO_NOTE = ReadModel.note


class LatestPerWorkspace(ReadModel):
    """A read model of one current row set per workspace: within a batch only each workspace's
    latest state matters, so `finish` writes `self.latest` once per workspace."""

    def begin(self, session: Session) -> None:
        self.latest: dict[str, tuple[Subscription, Tracking, Subscription.Event]] = {}

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        sub = self.current.sub
        self.latest[sub.workspace_id] = (sub, tracking, event)


def event_ref(sub_or_ws: Subscription | str, version: int) -> str:
    """How read models name an event: workspace:version (its place in the workspace's stream)."""
    ws = sub_or_ws if isinstance(sub_or_ws, str) else sub_or_ws.workspace_id
    return f"{ws}:{version}"
