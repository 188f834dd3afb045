"""The webhook dispatcher: sends the outbox's messages, at least once and in order per
(endpoint, workspace), and moves those that keep failing to the dead letters.

Each round it brings the outbox up to date (adapters/webhooks_outbox.py), then takes every
queue, one per (endpoint, workspace), whose oldest pending message is due, and sends that
queue's messages in notification order until one fails: that one waits (exponential backoff)
and the queue's later messages wait behind it, while the other queues go on, several at once.
A message is marked delivered only after a 2xx answer, so a crash in between sends it again
with the same `webhook-id`. After `max_attempts` failures, or once older than `max_age`, a
message becomes a dead letter and its queue moves on; `webhooks retry` queues it again.

One dispatcher per database sends at a time (a PostgreSQL advisory lock, or an flock beside
the SQLite file, both released when the process dies); a second one waits as a standby.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import and_, exists, func, select, update

from adapters.webhooks import DEAD, DELIVERED, PENDING, WebhookStore, open_view, signed_headers
from adapters.webhooks_outbox import OutboxBuilder
from domain.errors import LedgerError
from domain.ledger import Ledger


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and when to give up. Seconds, except `max_age`."""

    max_attempts: int = 8
    max_age: timedelta = timedelta(hours=24)
    backoff: float = 5.0  # ok-float: seconds before the first retry, doubling after each failure
    max_backoff: float = 3600.0  # ok-float: seconds
    timeout: float = 10.0  # ok-float: seconds for each of connect, write and read

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_backoff, self.backoff * 2 ** max(attempts - 1, 0)))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


class Dispatcher:
    """Builds the outbox of a ledger and delivers it. Use as a context manager."""

    def __init__(self, env: Mapping[str, str], policy: RetryPolicy = RetryPolicy(), *,
                 clock: Callable[[], datetime] = utcnow, concurrency: int = 4, batch: int = 100,
                 log: Callable[[str], None] = lambda _: None, transport: httpx.BaseTransport | None = None,
                 keep_delivered: timedelta = timedelta(days=7)) -> None:
        """`keep_delivered`: how long delivered messages stay in the table (for `webhooks list`
        and inspection) before each round's clean-up deletes them."""
        self.env = dict(env)
        self.keep_delivered = keep_delivered
        self.pruned_at: datetime | None = None
        self.policy, self.clock, self.log = policy, clock, log
        self.concurrency, self.batch = concurrency, batch
        self.source = Ledger(self.env)
        self.view = open_view(self.env)
        self.store = WebhookStore(self.env, self.view)
        self.builder = OutboxBuilder(self.view, self.source, clock)
        self.http = httpx.Client(timeout=httpx.Timeout(policy.timeout), follow_redirects=False, trust_env=False,
                                 transport=transport)
        self.counts = {"queued": 0, "delivered": 0, "failed": 0, "dead": 0}
        self._counts_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhooks")
        self._busy: set[tuple[str, str]] = set()
        """Queues whose turn is running: a queue has one turn at a time, so it stays in order."""

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self) -> None:
        """Let the turns under way finish (and start no more): their outcomes are in `status()` after."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.drain()
        self.http.close()
        self.view.close()
        self.source.close()

    # ------------------------------------------------------------ rounds

    def run_once(self) -> dict[str, Any]:
        """Queue what is new and send everything due now, until only backoffs are left."""
        self.counts["queued"] += self.builder.catch_up()
        while self.deliver_due():
            pass
        self.prune()
        return self.status()

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:  # ok-float: seconds
        """Keep queueing and sending until `stop` is set; a failing database is logged and retried."""
        self.log("dispatching")
        while not stop.is_set():
            try:
                self.counts["queued"] += self.builder.catch_up()
                self.deliver_due(wait=False)  # turns run on; a queue busy or failing is looked at next poll
                if self.pruned_at is None or self.clock() - self.pruned_at > timedelta(minutes=1):
                    self.prune()
            except Exception as e:  # noqa: BLE001 (database away: wait and retry)
                self.log(f"dispatch round failed, retrying: {e!r}")
            stop.wait(poll)

    def deliver_due(self, wait: bool = True) -> int:
        """A turn for every queue whose head is due and that has none running, several at once.
        `wait`: wait for them and return how many messages were tried (`--once`); else return how
        many turns started, and leave them running (`--loop`): a receiver that answers slowly
        holds up its own queue only, never the next round of the others."""
        with self._counts_lock:
            queues = [q for q in self.due_queues() if q not in self._busy]
        if not queues:
            return 0
        endpoints = {e["id"]: e for e in self.endpoints()}
        turns = []
        for ep, ws in queues:
            if ep in endpoints:
                with self._counts_lock:
                    self._busy.add((ep, ws))
                turns.append(self.pool.submit(self._turn, endpoints[ep], ws))
        if wait:
            return sum(turn.result() for turn in turns)
        for turn in turns:
            turn.add_done_callback(self._log_failure)
        return len(turns)

    def _log_failure(self, turn: Future[int]) -> None:
        """A turn left running that failed (the database away): its queue's next turn tries again."""
        if not turn.cancelled() and turn.exception() is not None:
            self.log(f"a delivery turn failed, retrying: {turn.exception()!r}")

    def _turn(self, endpoint: dict[str, Any], workspace: str) -> int:
        try:
            return self.deliver_queue(endpoint, workspace)
        finally:
            with self._counts_lock:
                self._busy.discard((endpoint["id"], workspace))

    def due_queues(self) -> list[tuple[str, str]]:
        """(endpoint, workspace) of each queue whose oldest pending message is due."""
        m = self.store.messages
        earlier = m.alias("earlier")
        query = (select(m.c.endpoint_id, m.c.workspace)
                 .where(m.c.status == PENDING, m.c.next_attempt_at <= self.clock(),
                        ~exists().where(and_(earlier.c.status == PENDING, earlier.c.endpoint_id == m.c.endpoint_id,
                                             earlier.c.workspace == m.c.workspace,
                                             earlier.c.notification_id < m.c.notification_id)))
                 .order_by(m.c.notification_id))
        with self.view.transaction(commit=False) as session:
            return [(r[0], r[1]) for r in session.execute(query)]

    def endpoints(self) -> list[dict[str, Any]]:
        with self.view.transaction(commit=False) as session:
            return self.store.live_endpoints(session)

    def deliver_queue(self, endpoint: dict[str, Any], workspace: str) -> int:
        """Send one queue's messages in order until one fails (or `batch` were sent)."""
        m = self.store.messages
        query = (select(m).where(m.c.status == PENDING, m.c.endpoint_id == endpoint["id"], m.c.workspace == workspace)
                 .order_by(m.c.notification_id).limit(self.batch))
        with self.view.transaction(commit=False) as session:
            rows = [dict(r) for r in session.execute(query).mappings()]
        tried, unrecorded = 0, []
        for row in rows:
            if row["next_attempt_at"] > self.clock():
                break
            outcome = self.send(endpoint, row)
            tried += 1
            unrecorded.append((row, outcome))
            if not outcome.ok:
                status = self.record(unrecorded)[-1]
                unrecorded = []
                if status == PENDING:  # to be retried: the queue waits behind it
                    return tried
        self.record(unrecorded)
        return tried

    def send(self, endpoint: Mapping[str, Any], row: Mapping[str, Any]) -> Outcome:
        headers = signed_headers(endpoint["secret"], row["msg_id"], self.clock(), row["body"])
        try:
            with self.http.stream("POST", endpoint["url"], content=row["body"].encode(), headers=headers) as answer:
                status = answer.status_code
        except httpx.HTTPError as e:
            return Outcome(False, None, f"{type(e).__name__}: {e}"[:300])
        return Outcome(200 <= status < 300, status, None if 200 <= status < 300 else f"HTTP {status}")

    def record(self, outcomes: list[tuple[Mapping[str, Any], Outcome]]) -> list[str]:
        """Write attempts' outcomes in one transaction; returns the messages' new statuses.
        A queue's successes are written together, after the batch or before its first failure:
        a crash in between only means those are sent again, with the same webhook-id."""
        if not outcomes:
            return []
        now = self.clock()
        statuses, m = [], self.store.messages
        with self.view.transaction(commit=True) as session:
            for row, outcome in outcomes:
                status, values = self.after_attempt(row, outcome, now)
                session.execute(update(m).where(m.c.msg_id == row["msg_id"], m.c.status == PENDING).values(**values))
                statuses.append(status)
        with self._counts_lock:
            for status in statuses:
                self.counts[{DELIVERED: "delivered", DEAD: "dead", PENDING: "failed"}[status]] += 1
        return statuses

    def after_attempt(self, row: Mapping[str, Any], outcome: Outcome, now: datetime) -> tuple[str, dict[str, Any]]:
        """A message's status and columns after one attempt."""
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "last_status": outcome.status,
                                  "last_error": outcome.error}
        if outcome.ok:
            return DELIVERED, {**values, "status": DELIVERED, "finished_at": now}
        if attempts >= self.policy.max_attempts or now - row["created_at"] >= self.policy.max_age:
            self.log(f"dead letter {row['msg_id']} after {attempts} attempts: {outcome.error}")
            return DEAD, {**values, "status": DEAD, "finished_at": now}
        return PENDING, {**values, "next_attempt_at": now + self.policy.delay(attempts)}

    def prune(self) -> int:
        """Delete messages delivered longer than `keep_delivered` ago; returns how many."""
        self.pruned_at = now = self.clock()
        m = self.store.messages
        with self.view.transaction(commit=True) as session:
            done = session.execute(m.delete().where(m.c.status == DELIVERED,
                                                    m.c.finished_at <= now - self.keep_delivered))
            return int(done.rowcount)  # type: ignore[attr-defined]

    def status(self) -> dict[str, Any]:
        m = self.store.messages
        with self.view.transaction(commit=False) as session:
            by_status: dict[str, int] = {status: n for status, n in
                                         session.execute(select(m.c.status, func.count()).group_by(m.c.status))}
        return {"position": self.builder.position(), "head": self.builder.head(), "this_run": dict(self.counts),
                "messages": {s: by_status.get(s, 0) for s in (PENDING, DELIVERED, DEAD)}}


# ------------------------------------------------------------------ one dispatcher at a time


@contextmanager
def dispatcher_lock(env: Mapping[str, str], wait: float | None,  # ok-float: seconds
                    on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the database's dispatcher lock; wait for it up to `wait` seconds (None: for ever)."""
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        from adapters.schema import connect
        key = int.from_bytes(hashlib.sha256(f"subledger webhooks {env['POSTGRES_SCHEMA']}".encode()).digest()[:8],
                             "big", signed=True)
        with connect(env) as conn:
            _acquire(lambda: bool(conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]),  # type: ignore[index]
                     wait, on_wait)
            yield
        return
    name = env.get("SQLITE_DBNAME", "")
    if name.startswith("file:"):  # in memory: one process only
        yield
        return
    fd = os.open(name + "-webhooks-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        _acquire(take, wait, on_wait)
        yield
    finally:
        os.close(fd)


def _acquire(take: Callable[[], bool], wait: float | None, on_wait: Callable[[], None]) -> None:  # ok-float
    deadline = None if wait is None else time.monotonic() + wait
    announced = False
    while not take():
        if not announced:
            on_wait()
            announced = True
        if deadline is not None and time.monotonic() > deadline:
            raise LedgerError("unavailable", "another webhook dispatcher is running on this database")
        time.sleep(0.2)
