"""The follower process on PostgreSQL: killed mid-batch it resumes with no duplicate and no
missing row; when its listening connection dies it falls back to polling (eventsourcing #305)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.settings import eventsourcing_env
from projections.follower import follow
from projections.runner import ALL, Projections
from tests.conftest import PG, Book
from tests.readmodels import check_against_ledger, event_counts, snapshot

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres


def schema_of(url: str) -> str:
    return url.split("schema=")[1]


def positions(schema: str) -> dict[str, int]:
    """Each read model's tracked position, read with plain SQL (0 before its first batch)."""
    found = {}
    with psycopg.connect(PG, autocommit=True) as conn:
        for model in ALL:
            try:
                row = conn.execute(f'SELECT notification_id FROM "{schema}"."rm_{model.family}_v{model.version}_tracking"').fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
            found[model.family] = row[0] if row else 0
    return found


def head(schema: str) -> int:
    with psycopg.connect(PG, autocommit=True) as conn:
        return conn.execute(f'SELECT coalesce(max(notification_id), 0) FROM "{schema}".subledger_events').fetchone()[0]


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def busy(b: Book, prefix: str, n: int) -> None:
    for i in range(n):
        ws = f"{prefix}{i}"
        b.do(ws, "add-payment-method", payment_method="pm_card_visa")
        b.do(ws, "subscribe", plan="pro", interval="month")
        b.do(ws, "set-members", members=i % 4)
        b.do(ws, "change-plan", plan="team")


def start_follower(db_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.project_cli", "project", "--follow", "--db", db_url,
         "--batch", "5", "--poll", "0.1"],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_follower_killed_mid_batch_resumes_exactly_once(pg_url: str) -> None:
    db_url = pg_url
    schema = schema_of(db_url)
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        busy(b, "a", 25)
        b.at("2026-05-02T00:00:00")  # renewals: invoices and payments for every workspace
        target = head(schema)
        follower = start_follower(db_url)
        try:
            wait_until(lambda: min(positions(schema).values()) > 0)
            follower.send_signal(signal.SIGKILL)
            follower.wait(10)
        finally:
            follower.kill()
        at_kill = positions(schema)
        assert min(at_kill.values()) < target, f"the follower finished before the kill: {at_kill}"

        busy(b, "b", 5)  # written while no follower runs
        follower = start_follower(db_url)
        try:
            wait_until(lambda: min(positions(schema).values()) == head(schema))
            busy(b, "c", 3)  # written while it listens
            wait_until(lambda: min(positions(schema).values()) == head(schema))
        finally:
            follower.send_signal(signal.SIGTERM)
            _, err = follower.communicate(timeout=20)
        assert b"listening" in err, err.decode()[-2000:]

        with Projections(eventsourcing_env(db_url), source=b.ledger) as p:
            assert all(s["lag"] == 0 for s in p.status())
            counts = event_counts(b.ledger)
            live = snapshot(p.engine)
            assert len(live["audit_trail"]) == counts["events"]
            assert len(live["invoices"]) == counts["invoices"] + counts["void"]
            check_against_ledger(b.ledger, p.engine)
            p.rebuild()
            assert snapshot(p.engine) == live
    finally:
        b.close()


def own_tcp_ports() -> set[int]:
    """The local ports of this process's TCP sockets (Linux /proc): its own connections' client ports."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_follower_falls_back_to_polling_when_listening_dies(pg_url: str) -> None:
    db_url = pg_url
    schema = schema_of(db_url)
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(eventsourcing_env(db_url), stop),
                              kwargs={"poll": 0.05, "stall": 1.0, "batch": 50, "log": lines.append})
    try:
        busy(b, "a", 2)
        thread.start()
        wait_until(lambda: "listening" in lines)
        with psycopg.connect(PG, autocommit=True) as conn:
            killed = conn.execute(  # this process's listeners only: other tests may be following their own
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' "
                "AND pid <> pg_backend_pid() AND client_port = ANY(%s)", (sorted(own_tcp_ports()),)).fetchall()
        assert killed
        wait_until(lambda: any(line.startswith("falling back to polling") for line in lines))
        busy(b, "b", 2)
        wait_until(lambda: min(positions(schema).values()) == head(schema))
        wait_until(lambda: lines.count("listening") >= 2)  # and it listens again
    finally:
        stop.set()
        thread.join(20)
        b.close()
    assert not thread.is_alive()


def test_a_catch_up_that_keeps_failing_is_retried_less_and_less_often(pg_url: str, monkeypatch: Any) -> None:
    """A failure that repeats (a partition that always fails) must not restart processes every poll."""
    Book(pg_url, "workspace", "2026-04-01T00:00:00").close()
    lines: list[str] = []
    stop = threading.Event()

    def failing(self: Projections, *args: Any, **kwargs: Any) -> dict[str, int]:
        raise RuntimeError("partition 1 of 2 failed")

    def log(line: str) -> None:
        lines.append(line)
        if len(lines) == 4:
            stop.set()

    monkeypatch.setattr(Projections, "catch_up", failing)
    follow(eventsourcing_env(pg_url), stop, poll=0.01, log=log)
    assert [line.split(" retrying in ")[1].split("s:")[0] for line in lines] == ["0.01", "0.02", "0.04", "0.08"]


def test_a_listening_follower_moves_to_tables_another_process_swapped_in_without_dropping_the_old(
        pg_url: str, monkeypatch: Any) -> None:
    """The swap commits, then the old tables are dropped in a transaction of their own; if that
    never happens (the rebuilding process died), the old tables stay and nothing fails in them:
    the follower sees the registry moved and follows it."""
    from projections import registry
    from projections.plan_state import read_plan_state

    b = Book(pg_url, "forms", "2026-04-01T00:00:00")
    stop = threading.Event()
    lines: list[str] = []
    following = threading.Thread(target=follow, args=(eventsourcing_env(pg_url), stop),
                                 kwargs={"poll": 0.05, "log": lines.append})
    try:
        busy(b, "a", 1)
        following.start()
        wait_until(lambda: "listening" in lines)
        monkeypatch.setattr(registry, "drop_tables", lambda *args, **kwargs: None)  # died before the drop
        with Projections(eventsourcing_env(pg_url), source=b.ledger) as rebuilding:
            rebuilding.rebuild(["plan_state"])
        busy(b, "b", 1)
        with Projections(eventsourcing_env(pg_url), source=b.ledger) as reader, reader.engine.connect() as conn:
            wait_until(lambda: (read_plan_state(conn, "b0") or {}).get("plan") == "team")
        assert any("rebuilt by another process" in line for line in lines), "\n".join(x[:100] for x in lines)

    finally:
        stop.set()
        following.join()
        b.close()


def test_a_follower_stops_when_another_version_of_a_read_model_was_built(pg_url: str) -> None:
    """Waiting cannot help a process whose code projects another version: it stops, saying why,
    for its supervisor to restart it with that code (it used to retry forever, every read model
    standing still)."""
    from projections.runner import ReadModelsOutdated

    b = Book(pg_url, "forms", "2026-04-01T00:00:00")
    stop = threading.Event()
    lines: list[str] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            follow(eventsourcing_env(pg_url), stop, poll=0.05, log=lines.append)
        except BaseException as e:  # noqa: BLE001
            failed.append(e)

    following = threading.Thread(target=run)
    try:
        busy(b, "a", 1)
        following.start()
        wait_until(lambda: "listening" in lines)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"UPDATE {schema_of(pg_url)}.rm_registry SET version = 99, tag = 'v99' "
                         "WHERE projection = 'plan_state'")
        following.join(30)
        assert not following.is_alive() and isinstance(failed[0], ReadModelsOutdated)
        assert any(line.startswith("stopping: the plan_state read model was rebuilt at version 99") for line in lines)
    finally:
        stop.set()
        following.join()
        b.close()


def test_a_rebuild_waits_for_a_batch_still_writing_to_the_old_tables(pg_url: str) -> None:
    """A follower (or `serve`) in the middle of a batch on the live tables when `project rebuild`
    swaps them: the batch, under its read model's lock, read the tracking row and is about to
    write the rows; the drop of the old set took the rows' table first, then waited for the
    tracking table, and PostgreSQL broke the deadlock by failing the rebuild (exit 3)."""
    from adapters.app import build_ledger, catch_up, read_models
    from domain.clock import TestClock
    from domain.commands import parse_actor, parse_command
    from projections.families import VERSIONS
    from tests.conftest import utc

    ledger = build_ledger(pg_url, clock=TestClock(utc("2026-01-01T00:00:00")))
    actor = parse_actor({"id": "t", "role": "admin"})
    assert ledger.handle("ws1", parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), actor).ok
    catch_up(ledger)
    schema = pg_url.split("schema=")[1]
    batch = psycopg.connect(PG)  # a projector's batch on the live tables, in projections/store.py's order
    batch.execute(f'SET search_path = "{schema}"')
    batch.execute("SET deadlock_timeout = '60s'")  # PostgreSQL would otherwise pick the batch as its victim
    live = f"rm_plan_state_v{VERSIONS['plan_state']}"
    batch.execute(f"SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '.' || '{live}_tracking', 0))")
    batch.execute(f"SELECT * FROM {live}_tracking")
    errors: list[BaseException] = []

    def rebuild() -> None:
        try:
            with read_models(ledger) as projections:
                projections.rebuild(["plan_state"], workers=1)
        except BaseException as e:  # noqa: BLE001 (asserted below)
            errors.append(e)

    t = threading.Thread(target=rebuild)
    t.start()
    with psycopg.connect(PG, autocommit=True) as watch:  # the swap is done and its drop of the old set waits
        for _ in range(1500):
            if watch.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchone():
                break
            time.sleep(0.02)
    batch.execute(f"UPDATE {live} SET members = members")  # the batch writes its rows and commits
    batch.commit()
    t.join(30)
    batch.close()
    ledger.close()
    assert errors == [] and not t.is_alive()
