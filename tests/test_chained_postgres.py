"""The PostgreSQL save function (adapters/chained_postgres_sql.py): one statement per save that
locks, notifies, inserts the events, links them exactly as replay/verify_chain.py computes, and
writes the due rows; all or nothing, in commit order."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from typer.testing import CliRunner

from adapters import chained_postgres_sql, due_index, schema
from adapters.cli import app
from adapters.settings import store_env
from replay.verify_chain import Link, Stored, link
from tests.conftest import PG, Book
from tests.support import VISA

TOPIC = "tests.test_chained_postgres:Happened"
DUE = datetime(2026, 5, 1, tzinfo=timezone.utc)


def event(oid: uuid.UUID, version: int, body: str = "") -> StoredEvent:
    return StoredEvent(oid, version, TOPIC, f'{{"v":{version},"b":"{body}"}}'.encode())


@pytest.fixture
def book(pg_url: str) -> Iterator[Book]:
    b = Book(pg_url, "workspace", "2026-04-01T00:00:00")
    yield b
    b.close()


def rows(pg_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{store_env(pg_url)["POSTGRES_SCHEMA"]}"')
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def links_as_python_computes_them(pg_url: str) -> tuple[list[Link], list[Link]]:
    """The chain table's rows, and the links replay/verify_chain.py makes from the events."""
    stored = [Stored(oid, v, nid, topic, bytes(state)) for nid, oid, v, topic, state in rows(
        pg_url, "SELECT notification_id, originator_id, originator_version, topic, state FROM subledger_events "
                "ORDER BY originator_id, originator_version")]
    written = [Link(*r) for r in rows(pg_url, "SELECT originator_id, originator_version, notification_id, digest, "
                                              "prev_hash, hash FROM subledger_events_chain "
                                              "ORDER BY originator_id, originator_version")]
    expected, prev = [], {}
    for s in stored:
        made = link(s, prev.get(s.originator_id, ""))
        prev[s.originator_id] = made.hash
        expected.append(made)
    return written, expected


def test_links_written_by_the_save_function_are_byte_identical_to_pythons_and_verify(
        book: Book, pg_url: str) -> None:
    assert book.do("ws", "add-payment-method", payment_method=VISA).ok
    assert book.do("ws", "subscribe", plan="team", interval="month", seats=2).ok
    recorder = book.ledger.recorder
    a, b = uuid.uuid4(), uuid.uuid4()
    recorder.insert_events([event(a, 1), event(b, 1), event(a, 2), event(b, 2), event(a, 3)])  # chained in a batch
    recorder.insert_events([event(a, 4), event(b, 3, "x")])  # the previous link as this process remembers it
    other = Book(pg_url, "workspace", "2026-04-01T00:00:00")
    try:
        other.ledger.recorder.insert_events([event(b, 4), event(a, 5)])  # ... and as read from the chain table
    finally:
        other.close()
    recorder.insert_events([event(a, 6)])  # this process's memory of `a` is stale: read from the table
    written, expected = links_as_python_computes_them(pg_url)
    assert written == expected and len(written) > 12
    assert book.ledger.recorder.verify_chain().ok
    result = CliRunner().invoke(app, ["--json", "audit", "verify", "--db", pg_url])  # its read models cannot read TOPIC
    chain = json.loads(result.stdout)["checks"]["event_chain"]
    assert chain["ok"] and chain["events"] == len(written), chain


def test_a_batch_returns_notification_ids_in_the_order_given(book: Book, pg_url: str) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    given = [event(b, 1), event(a, 1), event(b, 2), event(a, 2)]
    ids = book.ledger.recorder.insert_events(given)
    assert ids is not None and ids == sorted(ids) and len(set(ids)) == 4
    found = {nid: (oid, v) for nid, oid, v in rows(
        pg_url, "SELECT notification_id, originator_id, originator_version FROM subledger_events")}
    assert [found[i] for i in ids] == [(e.originator_id, e.originator_version) for e in given]


def test_a_version_conflict_raises_integrity_error_and_records_nothing(book: Book, pg_url: str) -> None:
    taken, fresh = uuid.uuid4(), uuid.uuid4()
    book.ledger.recorder.insert_events([event(taken, 1)])
    before = rows(pg_url, "SELECT (SELECT count(*) FROM subledger_events), (SELECT count(*) FROM "
                          "subledger_events_chain), (SELECT count(*) FROM subledger_events_due)")
    with pytest.raises(IntegrityError):
        book.ledger.recorder.insert_events([event(fresh, 1), event(fresh, 2), event(taken, 1, "again")],
                                           due={fresh: ("fresh", 2, DUE), taken: ("taken", 1, DUE)})
    assert rows(pg_url, "SELECT (SELECT count(*) FROM subledger_events), (SELECT count(*) FROM "
                        "subledger_events_chain), (SELECT count(*) FROM subledger_events_due)") == before
    assert book.ledger.recorder.insert_events([event(fresh, 1)], due={fresh: ("fresh", 1, DUE)})  # and it goes on
    assert rows(pg_url, "SELECT workspace_id FROM subledger_events_due WHERE originator_id = %s", fresh) == [("fresh",)]


def test_due_rows_keep_the_highest_version_written(book: Book, pg_url: str) -> None:
    oid = uuid.uuid4()
    recorder = book.ledger.recorder
    recorder.insert_events([event(oid, 1), event(oid, 2)], due={oid: ("w", 2, DUE)})
    recorder.record_due({oid: ("w", 1, None)})  # an older version's backfill never overwrites it
    assert rows(pg_url, "SELECT version, due_us FROM subledger_events_due") == [(2, due_index.micros(DUE))]
    recorder.insert_events([event(oid, 3)], due={oid: ("w", 3, None)})
    assert rows(pg_url, "SELECT version, due_us FROM subledger_events_due") == [(3, None)]


def test_notification_order_is_commit_order_under_concurrent_writers(pg_url: str) -> None:
    """Readers tailing the log never see an id appear below one they have already seen: each
    save's ids are issued and committed under the table lock the function takes."""
    writers = [Book(pg_url, "workspace", "2026-04-01T00:00:00") for _ in range(3)]
    stop, late, reads = threading.Event(), [], [0]

    def write(b: Book) -> None:
        streams = [uuid.uuid4() for _ in range(3)]
        for v in range(1, 61):
            b.ledger.recorder.insert_events([event(oid, v) for oid in streams])

    def read() -> None:
        seen: set[int] = set()
        with psycopg.connect(PG, autocommit=True) as conn:
            table = f'"{store_env(pg_url)["POSTGRES_SCHEMA"]}".subledger_events'
            while not stop.is_set():
                ids = {r[0] for r in conn.execute(f"SELECT notification_id FROM {table}")}
                high = max(seen, default=0)
                late.extend(i for i in ids - seen if i < high)
                seen |= ids
                reads[0] += 1

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(b,)) for b in writers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        stop.set()
        reader.join(30)
        for b in writers:
            b.close()
    assert reads[0] > 10 and not late, late[:5]
    assert rows(pg_url, "SELECT count(*) FROM subledger_events_chain WHERE originator_version <= 60") == [(540,)]


def test_a_database_set_up_by_the_previous_version_gets_the_save_function(pg_url: str) -> None:
    Book(pg_url, "workspace", "2026-04-01T00:00:00").close()
    fn = chained_postgres_sql.function_name("subledger_events")
    rows(pg_url, f"DROP FUNCTION {fn}")
    rows(pg_url, "UPDATE subledger_meta SET value = 'subledger-2' WHERE key = 'event_store'")
    b = Book(pg_url, "workspace", "2026-04-01T00:00:00")  # set up again, under the advisory lock
    try:
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    finally:
        b.close()
    assert rows(pg_url, "SELECT value FROM subledger_meta WHERE key = 'event_store'") == [
        (schema.versions()["event_store"],)]
    assert rows(pg_url, "SELECT count(*) FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
                fn) == [(1,)]

