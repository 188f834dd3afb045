"""notices: the outbox of customer notices (R17 and the payment notices), drained by a mailer.

A notice is born of one event and named by it: `workspace:version:kind`, so a rebuild names it
alike. The rebuildable table (rm_notices_<tag>) holds what is due and when; deliveries are kept
apart, in `notice_deliveries`, which no rebuild drops, so an acknowledged notice stays delivered
through any rebuild. `rm_notice_outbox` joins the two for readers.

A kind is one registration in KINDS: the event it is born of, when it falls due (default: at the
event), and optionally the change that withdraws it before it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, and_, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.catalog import Catalog
from domain.errors import LedgerError
from domain.periods import plus_days
from domain.subscription import Subscription
from projections.readmodel import ReadModel, event_ref
from projections.store import UtcDateTime, document, dumps, insert_rows, iso

Due = Callable[[Any, Subscription, Catalog], datetime]
Watch = Callable[[Subscription | None], Any]
META = {"originator_id", "originator_version", "timestamp", "actor_id", "actor_role", "channel", "cause", "reason",
        "idempotency_key", "args_hash", "catalog_version", "command_id", "catalog_hash"}


def at_event(event: Any, sub: Subscription, catalog: Catalog) -> datetime:
    return event.timestamp  # type: ignore[no-any-return]


def before_trial_end(event: Any, sub: Subscription, catalog: Catalog) -> datetime:
    """A trial falling back to Free is a downgrade at its end: noticed as one (R17), at least at its start."""
    return max(event.timestamp, plus_days(event.period_end, -catalog.policy.downgrade_notice_days))


def the_trial(sub: Subscription | None) -> Any:
    return sub.period_end if sub is not None and sub.status == "trialing" else None


def the_downgrade(sub: Subscription | None) -> Any:
    """The scheduled downgrade (whether noticed or not)."""
    if sub is None or not sub.scheduled or sub.scheduled["kind"] != "downgrade":
        return None
    s = sub.scheduled
    return (s["plan"], s.get("tier"), s.get("interval"), s.get("seats"), s["effective_at"])


@dataclass(frozen=True)
class Kind:
    name: str
    on: type[Any]
    """The event class a notice of this kind is born of (its exact class, not its subclasses)."""
    due: Due = at_event
    about: Watch | None = None
    """What the notice is about (an immutable value, or None): when an event changes it from
    something to anything else (cancelled, replaced, applied), the workspace's notices of this
    kind are withdrawn; one already delivered stays delivered."""


KINDS: list[Kind] = [
    Kind("downgrade_notice", Subscription.DowngradeNoticeDue, about=the_downgrade),
    Kind("trial_ending", Subscription.TrialStarted, due=before_trial_end, about=the_trial),
    Kind("trial_ended", Subscription.TrialExpired),
    Kind("payment_failed", Subscription.PaymentFailed),  # each dunning retry that fails too (R8)
    Kind("workspace_suspended", Subscription.WorkspaceSuspended),  # dunning's last step (R8, R19)
    Kind("workspace_reactivated", Subscription.WorkspaceReactivated),
]


def register(kind: Kind) -> Kind:
    """Add a notice kind (e.g. a dunning step). Bump Notices.version so history is replayed into it."""
    KINDS.append(kind)
    return kind


def detail(event: Any) -> dict[str, Any]:
    """What the mailer needs to write the notice: the event's own fields (not its metadata)."""
    fields = {k: v for k, v in vars(event).items() if k not in META and not k.startswith("_")}
    if isinstance(event, Subscription.PlanSet):
        fields = {"plan": event.plan, "period_end": event.period_end}
    return fields


DELIVERIES = Table(
    "notice_deliveries", MetaData(),
    Column("notice_id", String(200), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("delivered_at", UtcDateTime, nullable=False),
)
"""Acknowledged notices: written by `notices ack`, never by a projection, never dropped by a rebuild."""
OUTBOX = "rm_notice_outbox"


RENDERED = {"DowngradeNoticeDue": 2, "TrialStarted": 3, "TrialExpired": 3, "PaymentFailed": 4,
            "WorkspaceSuspended": 2, "WorkspaceReactivated": 3}
"""The class version of each event a notice is born of, as of Notices.version: a notice's detail
holds every field of its event, so a field an upcaster adds gives rebuilt notices another shape
than the live ones. Bump Notices.version with this table (3: PaymentFailed v4's `retries`; 4: WorkspaceReactivated
v3's `status`)."""


class Notices(ReadModel):
    family = "notices"
    version = 4
    tables = ("notices",)

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {"notices": Table(
            cls.table_name("notices", tag), metadata,
            Column("notice_id", String(200), primary_key=True),
            Column("workspace", String(64), nullable=False, index=True),
            Column("kind", String(48), nullable=False),
            Column("due_at", UtcDateTime, nullable=False, index=True),
            Column("created_at", UtcDateTime, nullable=False),
            Column("withdrawn_at", UtcDateTime),
            Column("event_id", String(96), nullable=False),
            Column("detail", Text, nullable=False),
            Column("position", Integer, nullable=False),
        )}

    @classmethod
    def on_activate(cls, conn: Connection, tag: str) -> None:
        DELIVERIES.create(conn, checkfirst=True)
        conn.execute(text(f'DROP VIEW IF EXISTS "{OUTBOX}"'))
        conn.execute(text(
            f'CREATE VIEW "{OUTBOX}" AS SELECT n.notice_id, n.workspace, n.kind, n.due_at, n.created_at, '
            f'n.withdrawn_at, d.delivered_at, n.event_id, n.detail, n.position '
            f'FROM "{cls.table_name("notices", tag)}" n LEFT JOIN "{DELIVERIES.name}" d ON d.notice_id = n.notice_id'))

    def begin(self, session: Session) -> None:
        self.buffer: list[dict[str, Any]] = []

    def finish(self, session: Session) -> None:
        insert_rows(session, self.view.t["notices"], self.buffer)

    def note(self, before: Subscription | None, event: Subscription.Event) -> Any:
        return {kind.name: kind.about(before) for kind in KINDS if kind.about is not None}

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        watched, sub = self.current.note, self.current.sub
        for kind in KINDS:
            was = watched.get(kind.name)
            if was is not None and kind.about is not None and kind.about(sub) != was:
                self.withdraw(session, sub.workspace_id, kind.name, event.timestamp)
            if type(event) is kind.on:
                ref = event_ref(sub, event.originator_version)
                self.buffer.append(dict(
                    notice_id=f"{ref}:{kind.name}", workspace=sub.workspace_id, kind=kind.name,
                    due_at=kind.due(event, sub, self.fold.catalog(sub)), created_at=event.timestamp,
                    withdrawn_at=None, event_id=ref, detail=dumps(detail(event)), position=tracking.notification_id,
                ))

    def withdraw(self, session: Session, workspace: str, kind: str, at: datetime) -> None:
        """Withdraw the workspace's notices of `kind` not withdrawn yet: those written before this
        batch, and those of this batch still in the buffer."""
        table = self.view.t["notices"]
        session.execute(update(table).where(and_(
            table.c.workspace == workspace, table.c.kind == kind, table.c.withdrawn_at.is_(None),
        )).values(withdrawn_at=at))
        for row in self.buffer:
            if row["workspace"] == workspace and row["kind"] == kind and row["withdrawn_at"] is None:
                row["withdrawn_at"] = at


def _outbox() -> Table:
    return Table(OUTBOX, MetaData(), Column("notice_id", String(200), primary_key=True),
                 Column("workspace", String(64)), Column("kind", String(48)), Column("due_at", UtcDateTime),
                 Column("created_at", UtcDateTime), Column("withdrawn_at", UtcDateTime),
                 Column("delivered_at", UtcDateTime), Column("event_id", String(96)), Column("detail", Text),
                 Column("position", Integer))


def pending(conn: Connection, at: datetime, workspace: str | None = None) -> list[dict[str, Any]]:
    """Notices due by `at`, neither delivered nor withdrawn, oldest due first."""
    t = _outbox()
    query = select(t).where(t.c.due_at <= at, t.c.delivered_at.is_(None), t.c.withdrawn_at.is_(None))
    if workspace is not None:
        query = query.where(t.c.workspace == workspace)
    return [document(dict(r)) | {"detail": _parsed(r["detail"])}
            for r in conn.execute(query.order_by(t.c.due_at, t.c.position, t.c.notice_id)).mappings()]


def _parsed(detail_text: str) -> dict[str, Any]:
    return json.loads(detail_text)  # type: ignore[no-any-return]


def find(conn: Connection, notice_id: str) -> dict[str, Any] | None:
    t = _outbox()
    row = conn.execute(select(t).where(t.c.notice_id == notice_id)).mappings().first()
    return document(dict(row)) | {"detail": _parsed(row["detail"])} if row else None


@dataclass(frozen=True)
class Ack:
    notice: dict[str, Any]
    delivered_at: datetime
    already: bool


def acknowledge(engine: Engine, notice_id: str, at: datetime) -> Ack | None:
    """Record `notice_id` delivered at `at`, once: an earlier ack is kept and reported
    (`already`); None when no such notice exists. Not before it fell due (clock_conflict)."""
    with engine.connect() as conn:
        notice = find(conn, notice_id)
    if notice is None:
        return None
    if notice.get("delivered_at") is None and at < datetime.fromisoformat(notice["due_at"]):
        raise LedgerError("clock_conflict", f"notice {notice_id} falls due at {notice['due_at']}: the clock reads "
                          f"{iso(at)}, before it, so it cannot have been delivered yet")
    try:
        with engine.begin() as conn:
            conn.execute(insert(DELIVERIES).values(notice_id=notice_id, workspace=notice["workspace"],
                                                   kind=notice["kind"], delivered_at=at))
        return Ack(notice, at, already=False)
    except IntegrityError:
        with engine.connect() as conn:
            first = conn.execute(select(DELIVERIES.c.delivered_at).where(DELIVERIES.c.notice_id == notice_id)).scalar_one()
        return Ack(notice, first, already=True)

