"""The due index (adapters/due_index.py): `advance` loads only the workspaces with something
due, a ledger recorded before the index still advances, and `advance --loop` is a scheduler
that stops cleanly on a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from domain.errors import LedgerError
from tests.conftest import Book, utc

ROOT = Path(__file__).resolve().parent.parent
FAR = datetime(2100, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def book(db_url: str) -> Iterator[Book]:
    """Two workspaces on a monthly plan (a renewal due on 1 February), three with nothing due."""
    b = Book(db_url, "workspace", "2026-01-01T00:00:00")
    for ws in ("paid1", "paid2", "idle1", "idle2", "idle3"):
        assert b.do(ws, "add-payment-method", payment_method="pm_card_visa").ok
    for ws in ("paid1", "paid2"):
        assert b.do(ws, "subscribe", plan="team", interval="month", seats=2).ok
    yield b
    b.ledger.close()


def counting_loads(book: Book) -> Counter[str]:
    loads: Counter[str] = Counter()
    get = book.ledger.get

    def counted(workspace_id: str, at: Any = None) -> Any:
        loads[workspace_id] += 1
        return get(workspace_id, at)

    book.ledger.get = counted  # type: ignore[method-assign]
    return loads


def forget_the_index(book: Book) -> None:
    """As a ledger recorded before the index existed: no rows, not marked complete."""
    table = book.ledger.recorder.events_table_name
    run_sql(book, f"DELETE FROM {table}_due", f"DELETE FROM {table}_chain_meta WHERE name = 'due_index'")


def run_sql(book: Book, *statements: str) -> None:
    """Statements on the ledger's own database (its schema on PostgreSQL), as another process would."""
    recorder = book.ledger.recorder
    if hasattr(recorder.datastore, "schema"):
        with recorder.datastore.get_connection() as conn:
            conn.execute(f'SET search_path TO "{recorder.datastore.schema}"')
            for statement in statements:
                conn.execute(statement)
            conn.commit()
    else:
        with recorder.datastore.transaction(commit=True) as c:
            for statement in statements:
                c.execute(statement)


def test_a_ledger_an_older_release_wrote_to_is_indexed_again_by_the_next_process(book: Book, db_url: str) -> None:
    """An older process writing after an upgrade saves without the due index and records its own
    version: paid2's renewal was never found, and it stayed active unbilled. The next process of
    this version finds another version recorded and indexes every workspace again."""
    book.ledger.advance()
    run_sql(book, f"DELETE FROM {book.ledger.recorder.events_table_name}_due WHERE workspace_id = 'paid2'",
            "UPDATE subledger_meta SET value = 'subledger-6 eventsourcing-9.5.0' WHERE key = 'event_store'")
    later = Book(db_url, "workspace", "2026-02-01T00:00:01")
    try:
        assert sorted(later.ledger.advance()) == ["paid1", "paid2"]
    finally:
        later.ledger.close()


def test_a_ledger_a_newer_release_set_up_is_refused(book: Book, db_url: str) -> None:
    """This version would set it up again for itself, record its own older version and write."""
    run_sql(book, "UPDATE subledger_meta SET value = 'subledger-99 eventsourcing-9.9.0' WHERE key = 'event_store'")
    with pytest.raises(LedgerError) as refused:
        Book(db_url, "workspace", "2026-02-01T00:00:01")
    assert refused.value.code == "unavailable" and "set up by a newer subledger" in refused.value.message


def test_the_due_index_lists_only_workspaces_with_something_due(book: Book) -> None:
    assert sorted(book.ledger.recorder.due_workspaces(FAR)) == ["paid1", "paid2"]
    assert book.ledger.recorder.due_workspaces(utc("2026-01-31T00:00:00")) == []


def test_advance_loads_only_the_workspaces_with_something_due(book: Book) -> None:
    book.ledger.advance()  # the index is complete: nothing is backfilled
    loads = counting_loads(book)
    book.clock.move_to(utc("2026-01-15T00:00:00"))
    assert book.ledger.advance() == {}
    assert loads == Counter()
    book.clock.move_to(utc("2026-02-01T00:00:01"))
    done = book.ledger.advance()
    assert sorted(done) == ["paid1", "paid2"]
    assert set(loads) == {"paid1", "paid2"}
    assert book.ledger.recorder.due_workspaces(utc("2026-02-01T00:00:01")) == []  # the next renewal: March


def test_a_ledger_recorded_before_the_due_index_still_advances(book: Book) -> None:
    forget_the_index(book)
    assert book.ledger.recorder.due_workspaces(FAR) == []
    book.clock.move_to(utc("2026-02-01T00:00:01"))
    assert sorted(book.ledger.advance()) == ["paid1", "paid2"]  # indexed first, then advanced
    assert book.ledger.recorder.due_index_complete()
    assert sorted(book.ledger.recorder.due_workspaces(FAR)) == ["paid1", "paid2"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_advance_loop_runs_rounds_until_a_signal_then_exits_0(tmp_path: Path, sig: int) -> None:
    script = Path(sys.executable).with_name("subledger")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "adapters.cli"]
    proc = subprocess.Popen([*command, "--db", f"sqlite:///{tmp_path}/l.db", "--json", "advance", "--loop",
                             "--interval", "0.2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        rounds = [json.loads(proc.stdout.readline()) for _ in range(2)]  # type: ignore[union-attr]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        timer.cancel()
    assert [r["ok"] for r in rounds] == [True, True] and rounds[0]["due"] == {}
    assert (proc.returncode, err) == (0, "")


def test_advance_loop_goes_on_when_its_database_connections_are_cut(pg_url: str) -> None:
    """What a PostgreSQL restart or failover does to the scheduler's connections: the round
    fails, is reported on stderr, and the next round connects again. It exited 3 (`unavailable`),
    and renewals stopped until someone restarted it."""
    import psycopg

    from tests.conftest import PG
    schema = pg_url.split("schema=")[1]
    script = Path(sys.executable).with_name("subledger")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "adapters.cli"]
    for args in (["add-payment-method", "ws1", "--payment-method", "pm_card_visa"], ["subscribe", "ws1", "--plan", "pro"]):
        subprocess.run([*command, "--db", pg_url, *args], cwd=ROOT, check=True, capture_output=True)
    proc = subprocess.Popen([*command, "--db", pg_url, "--json", "advance", "--loop", "--interval", "0.3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        assert json.loads(proc.stdout.readline())["ok"]  # type: ignore[union-attr]
        for _ in range(3):
            with psycopg.connect(PG, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE pid <> pg_backend_pid() AND query LIKE %s", (f"%{schema}%",))
            rounds = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert proc.poll() is None, f"the scheduler exited {proc.returncode}"
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and rounds["ok"]
