"""The event feed: every stored event, published once to a NATS JetStream stream.

A follower of the event store, like the read models: it reads the notification log after
its tracked position, publishes each event to `<prefix>.events.<workspace>` of one stream
and waits for JetStream's acknowledgement, then records the position (an
eventsourcing-sqlalchemy tracking recorder in the ledger's own database). Publish, ack,
record: a crash between ack and record re-reads events the stream already holds.

Exactly once per stream, whatever the crash and however long the outage:
- each message's `Nats-Msg-Id` is the event's notification id, so JetStream drops a
  re-publish within the stream's duplicate window;
- each message also carries `Nats-Expected-Last-Sequence` (the stream's sequence it must
  follow), so the stream only ever grows by the next event: it holds a gapless prefix of
  the log, in log order, even when publishes are pipelined or two publishers race;
- so on start (and after any failed publish) the publisher resumes after
  max(tracked position, the notification id of the stream's last message), which makes the
  guarantee independent of the duplicate window. docs/scaling.md has the argument.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
from eventsourcing.persistence import InfrastructureFactory, IntegrityError, Notification, Tracking
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.recorders import SQLAlchemyTrackingRecorder
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError
from sqlalchemy.exc import DBAPIError

from domain.ledger import Ledger
from domain.subscription import Subscription, workspace_uuid
from projections.store import dumps, iso, view_env

NATS_URL = "nats://127.0.0.1:4222"
APP = Ledger.name
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code when a message's expected last sequence is not the stream's."""
LOGS = {workspace_uuid("__workspace_index__"): "_index", workspace_uuid("__catalog_log__"): "_catalogs",
        workspace_uuid("__ledger__"): "_ledger", workspace_uuid("__payments__"): "_payments"}
"""The ledger's own logs, published under these subject tokens (a workspace id never starts with `_`)."""
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
PROMOTED = {"originator_id", "originator_version", "originator_topic", "timestamp", "actor_id", "actor_role",
            "channel", "command_id"}
"""Event attributes that have their own key in a message; the rest go under `fields`."""


class FeedError(Exception):
    """The feed cannot go on (bad name, a stream that is not the feed's, NATS unreachable)."""


def ledger_name(env: Mapping[str, str]) -> str:
    """A name for the ledger's database: the PostgreSQL database and schema, or the SQLite
    file's stem, lower-cased to letters, digits and `_`."""
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        schema = env.get("POSTGRES_SCHEMA") or "public"
        raw = env["POSTGRES_DBNAME"] + ("" if schema == "public" else f"_{schema}")
    else:
        name = env.get("SQLITE_DBNAME", "ledger")
        raw = "memory" if name.startswith("file:") else Path(name).stem
    return re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")[:38] or "ledger"


def default_stream(env: Mapping[str, str]) -> str:
    return f"SUBLEDGER_{ledger_name(env).upper()}"


def default_subject_prefix(env: Mapping[str, str]) -> str:
    return f"subledger.{ledger_name(env)}"


def subject_token(workspace_id: str) -> str:
    """A workspace id as one subject token: `.` (allowed in ids, a separator in subjects) as %2E."""
    return workspace_id.replace(".", "%2E")


def message(event: Any, notification_id: int, workspace: str | None) -> dict[str, Any]:
    """An event as the feed publishes it (JSON; Decimals as strings, instants ISO-8601 UTC)."""
    state = vars(event)
    return {
        "notification_id": notification_id,
        "type": type(event).__name__,
        "workspace": workspace,
        "originator_id": str(event.originator_id),
        "version": event.originator_version,
        "timestamp": iso(event.timestamp),
        "command_id": state.get("command_id"),
        "actor": {"id": state["actor_id"], "role": state["actor_role"]} if "actor_id" in state else None,
        "channel": state.get("channel"),
        "fields": {k: v for k, v in state.items() if k not in PROMOTED},
    }


def tracking_recorder(env: Mapping[str, str], stream: str) -> SQLAlchemyTrackingRecorder:
    """The feed's position for `stream`: table feed_<stream>_tracking in the ledger's database."""
    name = f"feed_{stream}"
    factory = InfrastructureFactory[SQLAlchemyTrackingRecorder].construct(Environment(name, view_env(env, name)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This declarative base already contains a class")
        try:
            return factory.tracking_recorder(SQLAlchemyTrackingRecorder)
        except DBAPIError:  # another publisher created the table between our check and create
            return factory.tracking_recorder(SQLAlchemyTrackingRecorder)


class Publisher:
    """Publishes a ledger's events to one JetStream stream (use as an async context manager)."""

    def __init__(self, env: Mapping[str, str], *, stream: str | None = None, subject_prefix: str | None = None,
                 nats_url: str = NATS_URL, batch: int = 500, duplicate_window: float = 120.0,  # ok-float: seconds
                 timeout: float = 10.0, log: Callable[[str], None] = lambda _: None) -> None:  # ok-float: seconds
        self.env = dict(env)
        self.stream = stream or default_stream(env)
        self.prefix = subject_prefix or default_subject_prefix(env)
        if not STREAM_NAME.match(self.stream):
            raise FeedError(f"stream name {self.stream!r}: 1-48 letters, digits, '_' or '-'")
        if not SUBJECT_PREFIX.match(self.prefix):
            raise FeedError(f"subject prefix {self.prefix!r}: dot-separated tokens of letters, digits, '_' or '-'")
        self.subjects = f"{self.prefix}.events.>"
        self.nats_url, self.batch, self.timeout, self.log = nats_url, batch, timeout, log
        self.duplicate_window = duplicate_window
        self.source = Ledger(self.env)
        self.tracking = tracking_recorder(self.env, self.stream)
        self.names: dict[UUID, tuple[str | None, str]] = {oid: (None, token) for oid, token in LOGS.items()}
        self.nc: Any = None
        self.js: Any = None
        self.last_seq = 0
        """The stream's sequence of the last message this feed knows of."""
        self.position = 0
        """The notification id of the last event known to be in the stream."""
        self.published = 0
        """Messages this publisher added to the stream (JetStream's duplicates not counted)."""
        self.recording: asyncio.Future[None] | None = None
        """The position being recorded (in a thread) while the next batch is sent."""

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Publisher:
        async def reported(e: Exception) -> None:
            self.log(f"NATS: {e!r}")

        try:  # once connected, reconnect for ever; the first connection gets a time limit
            self.nc = await asyncio.wait_for(nats.connect(
                self.nats_url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=1,
                error_cb=reported), self.timeout)
        except Exception as e:  # noqa: BLE001 (nats-py raises several kinds)
            self.close()
            raise FeedError(f"NATS at {self.nats_url} is unreachable: {e!r}") from e
        self.js = self.nc.jetstream(timeout=self.timeout)
        try:
            await self.ensure_stream()
            await self.resync()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        recording, self.recording = self.recording, None
        if recording is not None:  # let a position being recorded finish (its error was the caller's already)
            await asyncio.gather(recording, return_exceptions=True)
        if self.nc is not None:
            await self.nc.close()
        self.close()

    def close(self) -> None:
        self.source.close()
        if self.tracking.datastore.engine is not None:
            self.tracking.datastore.engine.dispose()

    async def ensure_stream(self) -> None:
        """Create the stream if it is missing; refuse one that does not take the feed's subjects."""
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(StreamConfig(
                name=self.stream, subjects=[self.subjects], storage=StorageType.FILE,
                duplicate_window=self.duplicate_window,
                description=f"subledger events of {ledger_name(self.env)}: one message per stored event"))
            return
        if self.subjects not in (info.config.subjects or []):
            raise FeedError(f"stream {self.stream} exists without the subjects {self.subjects} "
                            f"(it has {info.config.subjects}): choose another --stream or --subject-prefix")

    # ------------------------------------------------------------ positions

    def tracked(self) -> int:
        return self.tracking.max_tracking_id(APP) or 0

    def head(self) -> int:
        return self.source.recorder.max_notification_id() or 0

    async def stream_tail(self) -> tuple[int, int]:
        """(last sequence, notification id of the last message) of the stream; 0 if empty."""
        state = (await self.js.stream_info(self.stream)).state
        if not state.messages:
            return state.last_seq, 0
        last = await self.js.get_msg(self.stream, state.last_seq)
        msg_id = (last.headers or {}).get(MSG_ID, "")
        if not msg_id.isdigit():
            raise FeedError(f"stream {self.stream}'s last message (sequence {state.last_seq}) has no notification "
                            f"id as its {MSG_ID}: something other than the feed publishes to {self.subjects}")
        return state.last_seq, int(msg_id)

    async def resync(self) -> None:
        """Resume after max(tracked, last in stream), and record the stream's lead if it has one.
        The tracked position is read first: a racing publisher records only what the stream
        already holds, so the position read cannot be ahead of the stream's tail read after it."""
        await self.recorded()
        tracked = self.tracked()
        self.last_seq, in_stream = await self.stream_tail()
        self.position = max(tracked, in_stream)
        if in_stream > tracked:
            self.record(in_stream)
            self.log(f"stream {self.stream} was ahead of the tracked position {tracked}: resuming after {in_stream}")

    async def recorded(self) -> None:
        """Wait until the position last acknowledged is recorded."""
        if self.recording is not None:
            recording, self.recording = self.recording, None
            await recording

    def record(self, notification_id: int) -> None:
        try:
            self.tracking.insert_tracking(Tracking(APP, notification_id))
        except IntegrityError:
            pass  # another publisher recorded this far or further

    # ------------------------------------------------------------ publishing

    async def publish_pending(self) -> int:
        """Publish every event recorded after the position; returns how many were published.
        The next batch is read and encoded while JetStream stores and acknowledges this one."""
        published = 0
        outgoing = self.read(self.position)
        while outgoing:
            sent = await self.send(outgoing)
            ahead = self.read(outgoing[-1][0]) if len(outgoing) == self.batch else []
            added = await self.settle(outgoing, *sent)
            if added is None:  # another publisher moved the stream: read on from the new position
                ahead = self.read(self.position)
            published += added or 0
            outgoing = ahead
        await self.recorded()
        return published

    def read(self, after: int) -> list[tuple[int, str, bytes]]:
        """The next batch of stored events after `after`, encoded."""
        return [self.encode(n) for n in self.source.recorder.select_notifications(start=after + 1, limit=self.batch)]

    async def send(self, outgoing: Sequence[tuple[int, str, bytes]]) -> tuple[list[asyncio.Future[Any]], Exception | None]:
        """Send a batch without waiting (in order, on one connection), each message guarded by
        the stream sequence it must follow. Returns the acks to come, and why sending stopped."""
        futures = []
        for k, (nid, subject, payload) in enumerate(outgoing):
            try:
                futures.append(await self.js.publish_async(subject, payload,
                                                           headers=self.headers(nid, self.last_seq + k)))
            except Exception as e:  # noqa: BLE001 (connection lost: settle what was sent)
                return futures, e
        return futures, None

    async def settle(self, outgoing: Sequence[tuple[int, str, bytes]], futures: list[asyncio.Future[Any]],
                     failed: Exception | None) -> int | None:
        """Wait for a batch's acks, then record the position; returns how many messages the
        stream added. On any failure, resync from the stream and raise FeedError, except when
        another publisher moved the stream: then resync and return None."""
        try:
            acks = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), self.timeout)
        except asyncio.TimeoutError as e:
            acks, failed = [], failed or e
        failed = failed or next((a for a in acks if isinstance(a, BaseException)), None)
        if failed is not None or not all(a.seq == self.last_seq + k + 1 for k, a in enumerate(acks)):
            before = self.position
            await self.resync()
            if isinstance(failed, APIError) and failed.err_code == WRONG_LAST_SEQUENCE:
                self.log(f"another publisher moved the stream: resuming after {self.position}")
                return None
            if failed is None:
                raise FeedError(f"stream {self.stream} acknowledged out of sequence after {before}")
            raise FeedError(f"publishing to {self.stream} failed after {self.position}: {failed!r}") from failed
        self.last_seq = acks[-1].seq
        self.position = outgoing[-1][0]
        await self.recorded()  # positions are recorded in order, each only after its acks
        self.recording = asyncio.ensure_future(asyncio.to_thread(self.record, self.position))
        added = sum(1 for a in acks if not a.duplicate)
        self.published += added
        return added

    @staticmethod
    def headers(notification_id: int, expected_last_seq: int) -> dict[str, str]:
        headers = {MSG_ID: str(notification_id)}
        if expected_last_seq > 0:  # JetStream ignores 0: only the first message of an empty stream goes unguarded
            headers[EXPECTED_LAST_SEQUENCE] = str(expected_last_seq)
        return headers

    def encode(self, notification: Notification) -> tuple[int, str, bytes]:
        """(notification id, subject, JSON body) of a stored event."""
        event = self.source.mapper.to_domain_event(notification)
        workspace, token = self.name_of(event)
        body = dumps(message(event, notification.id, workspace)).encode()
        return notification.id, f"{self.prefix}.events.{token}", body

    def name_of(self, event: Any) -> tuple[str | None, str]:
        """(workspace id, subject token) of the stream an event belongs to."""
        found = self.names.get(event.originator_id)
        if found is not None:
            return found
        if isinstance(event, Subscription.WorkspaceRegistered):
            named = [event.workspace_id]
        else:  # resumed mid-log: a workspace's index entry is saved with its first event
            named = self.source.workspaces()
        for ws in named:
            self.names[workspace_uuid(ws)] = (ws, subject_token(ws))
        return self.names.setdefault(event.originator_id, (None, str(event.originator_id)))

    async def follow(self, stop: asyncio.Event, poll: float = 0.5) -> None:  # ok-float: seconds
        """Keep publishing until `stop` is set; a failure (NATS or the database away) is logged,
        then retried after a resync."""
        self.log(f"following: publishing to {self.stream} after {self.position}")
        dirty = False
        while not stop.is_set():
            try:
                if dirty:
                    await self.resync()
                    dirty = False
                if await self.publish_pending():
                    continue
            except Exception as e:  # noqa: BLE001 (wait, resync and retry)
                self.log(f"publishing failed, retrying: {e!r}")
                dirty = True
            try:
                await asyncio.wait_for(stop.wait(), poll)
            except asyncio.TimeoutError:
                pass

    def status(self) -> dict[str, Any]:
        head = self.head()
        return {"stream": self.stream, "subjects": self.subjects, "position": self.position,
                "tracked": self.tracked(), "stream_last_seq": self.last_seq, "head": head,
                "lag": head - self.position, "published": self.published}
