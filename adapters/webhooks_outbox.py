"""The webhook outbox: a follower of the event store that writes one message per (endpoint,
matching event), with its tracking position in the same transaction.

An `eventsourcing.projection.Projection` whose view is the webhook tables' tracking recorder
(adapters/webhooks.py), like the read models: a batch of events, its outbox rows and the
position of its last event commit together, under the view's write lock, so a crash or a
second follower never queues an event twice nor skips one. Only workspace events (the
Subscription's) are queued; the ledger's own logs (workspace index, catalogs) are not. The
body is the feed's message (adapters/feed.py `message`), in canonical JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from sqlalchemy.orm import Session

from adapters.feed import message
from adapters.webhooks import APP, NAME, PENDING, WebhookStore, WebhookView, matches, message_id
from domain.ledger import Ledger
from domain.subscription import Subscription, workspace_uuid
from projections.store import dumps


class OutboxBuilder(Projection[WebhookView]):
    """Queues the events of `source` (a Ledger) for the endpoints that want them."""

    name = NAME

    def __init__(self, view: WebhookView, source: Ledger,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        super().__init__(view)
        self.source = source
        self.clock = clock
        self.store = WebhookStore(source.env, view)  # type: ignore[arg-type]
        self.names: dict[UUID, str] = {}

    def position(self) -> int:
        return self.view.max_tracking_id(APP) or 0

    def head(self) -> int:
        return self.source.recorder.max_notification_id() or 0

    def catch_up(self, batch: int = 500) -> int:
        """Queue everything recorded after the position; returns how many messages were queued."""
        self.skip_unwanted()
        queued = 0
        while True:
            notifications = self.source.recorder.select_notifications(start=self.position() + 1, limit=batch)
            if not notifications:
                return queued
            items = [(self.source.mapper.to_domain_event(n), Tracking(APP, n.id)) for n in notifications]
            queued += self.process_batch(items)
            if len(notifications) < batch:
                return queued

    def skip_unwanted(self) -> None:
        """Move the position, without reading, past events no endpoint can want: those up to the
        oldest live endpoint's `since`, or up to the head when there is no endpoint (an endpoint
        added later starts after the head it reads under the same lock). A first run on a long
        history, or a ledger nobody subscribes to, then reads nothing."""
        def floor(session: Session) -> int:
            endpoints = self.store.live_endpoints(session)
            return min(e["since"] for e in endpoints) if endpoints else self.head()

        with self.view.transaction(commit=False) as session:  # the usual case, without the write lock
            if floor(session) <= self.position():
                return
        with self.view.transaction(commit=True) as session:
            position = self.view.lock_position(session, APP) or 0
            skip_to = floor(session)
            if skip_to > position:
                self.view._insert_tracking(session, Tracking(APP, skip_to))  # noqa: SLF001 (same transaction)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        self.process_batch([(domain_event, tracking)])

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> int:
        """Queue a batch and record its last position, atomically; events at or before the
        committed position (another follower's work) are skipped."""
        now = self.clock()
        with self.view.transaction(commit=True) as session:
            position = self.view.lock_position(session, APP)
            todo = [(e, t) for e, t in batch if position is None or t.notification_id > position]
            if not todo:
                return 0
            endpoints = self.store.live_endpoints(session)
            rows = []
            for event, tracking in todo:
                if not isinstance(event, Subscription.Event):
                    continue
                workspace = self.workspace_of(event)
                kind = type(event).__name__
                wanting = [e for e in endpoints if matches(e, kind, workspace, tracking.notification_id)]
                if not wanting:
                    continue
                body = dumps(message(event, tracking.notification_id, workspace))
                rows += [{"endpoint_id": e["id"], "notification_id": tracking.notification_id,
                          "msg_id": message_id(e["id"], tracking.notification_id), "workspace": workspace,
                          "event_type": kind, "body": body, "status": PENDING, "attempts": 0, "created_at": now,
                          "next_attempt_at": now} for e in wanting]
            if rows:
                session.execute(self.store.messages.insert(), rows)
            self.view._insert_tracking(session, todo[-1][1])  # noqa: SLF001 (same transaction)
        return len(rows)

    def workspace_of(self, event: Any) -> str:
        found = self.names.get(event.originator_id)
        if found is None:
            named = [event.workspace_id] if isinstance(event, Subscription.WorkspaceRegistered) \
                else self.source.workspaces()  # resumed mid-log: the index lists every workspace
            self.names.update({workspace_uuid(ws): ws for ws in named})
            found = self.names.get(event.originator_id, str(event.originator_id))
        return found
