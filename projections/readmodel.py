"""The base of every read model: an eventsourcing `Projection` whose view is a tracking
recorder, and the fold that gives it the workspace's aggregate before and after an event.

Exactly-once comes from the library's tracking: each batch of events and the tracking
position of its last event commit in one transaction of the view's database; a batch
that was already projected (by a crashed run or another process) is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.catalog import Catalog
from domain.subscription import Subscription
from projections.store import ReadModelView


class Fold:
    """Each workspace's Subscription as of the event being projected, folded forward with
    the aggregate's own `apply` (so a read model never re-implements a state rule).

    A cache miss (a restart, another process having moved on) loads the aggregate at the
    version just before the event from the ledger's repository."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.subs: dict[UUID, Subscription] = {}
        self.seen: dict[UUID, dict[int, Subscription.Event]] = {}
        """This batch's events by workspace and version, so a read model rarely reads the store."""

    def before(self, event: Subscription.Event) -> Subscription | None:
        want = event.originator_version - 1
        sub = self.subs.get(event.originator_id)
        if sub is not None and sub.version == want:
            return sub
        if want < 1:
            return None
        return self.source.repository.get(event.originator_id, version=want)

    def apply(self, event: Subscription.Event, sub: Subscription | None) -> Subscription:
        after = event.mutate(sub)
        assert isinstance(after, Subscription)
        self.subs[event.originator_id] = after
        self.seen.setdefault(event.originator_id, {})[event.originator_version] = event
        return after

    def catalog(self, sub: Subscription) -> Catalog:
        return self.source.catalog_for(sub)

    def forget(self) -> None:
        self.subs.clear()
        self.seen.clear()


class ReadModel(Projection[ReadModelView]):
    """One read model. Subclasses set `family` and `version`, define their tables with
    `define`, and write one event's effect with `project`.

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
        try:
            with self.view.transaction(commit=True) as session:
                position = self.view.lock_position(session, self.application_name)
                todo = [(e, t) for e, t in batch if position is None or t.notification_id > position]
                if not todo:
                    return 0
                self.fold.seen.clear()
                self.begin(session)
                for event, tracking in todo:
                    if isinstance(event, Subscription.Event):
                        self.project(session, event, tracking)
                self.finish(session)
                self.view._insert_tracking(session, todo[-1][1])  # noqa: SLF001 (same transaction)
        except BaseException:
            self.fold.forget()
            self.abort()
            raise
        return len(todo)

    def begin(self, session: Session) -> None:
        """Called at the start of a batch's transaction (drop per-batch caches here)."""

    def finish(self, session: Session) -> None:
        """Called at the end of a batch, before its position is recorded: write what was
        buffered (rows are written in bulk, and per-workspace rows once, at their last state)."""

    def abort(self) -> None:
        """Called when a batch's transaction failed (drop caches that may be ahead)."""

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        raise NotImplementedError


class LatestPerWorkspace(ReadModel):
    """A read model of one current row set per workspace: within a batch only each workspace's
    latest state matters, so `finish` writes `self.latest` once per workspace."""

    def begin(self, session: Session) -> None:
        self.latest: dict[str, tuple[Subscription, Tracking, Subscription.Event]] = {}

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        sub = self.fold.apply(event, self.fold.before(event))
        self.latest[sub.workspace_id] = (sub, tracking, event)


def event_ref(sub_or_ws: Subscription | str, version: int) -> str:
    """How read models name an event: workspace:version (its place in the workspace's stream)."""
    ws = sub_or_ws if isinstance(sub_or_ws, str) else sub_or_ws.workspace_id
    return f"{ws}:{version}"
