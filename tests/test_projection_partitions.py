"""Partitioned catch-up and rebuild (issue 11): several processes, one per partition of the
workspaces, write exactly the rows one process writes; a partition that fails moves no read
model's position, and the next run (partitioned or single) finishes the work identically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from typer.testing import CliRunner

from adapters.project_cli import app as project_cli
from adapters.settings import eventsourcing_env
from domain.errors import LedgerError
from projections import partitions
from projections.partition_keys import SQL_BUCKET, Partition
from projections.runner import ALL, Projections, catch_up
from tests.conftest import PG, Book, fresh_postgres_schema


PLANS = (("pro", "month"), ("team", "month"), ("pro", "year"), ("team", "year"))


def record_history(b: Book, workspaces: int = 40) -> None:
    """Workspaces on every plan and interval, upgrades, scheduled downgrades, members, and declined
    renewals (payment failures, dunning, notices), over fourteen months of renewals."""
    for i in range(workspaces):
        ws = f"ws{i}"
        plan, interval = PLANS[i % len(PLANS)]
        b.do(ws, "add-payment-method", payment_method="pm_card_visa")
        b.do(ws, "subscribe", plan=plan, interval=interval)
        b.do(ws, "set-members", members=1 + i % 3)
    b.at("2026-01-11T00:00:00")
    for i in range(0, workspaces, 3):
        b.do(f"ws{i}", "change-plan", plan="team" if PLANS[i % len(PLANS)][0] == "pro" else "pro")
    for i in range(1, workspaces, 5):
        b.do(f"ws{i}", "add-payment-method", payment_method="pm_card_chargeDeclined")
    for month in range(2, 27):
        b.at(f"{2026 + (month - 1) // 12}-{(month - 1) % 12 + 1:02d}-02T00:00:00")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """One PostgreSQL ledger with the history, shared by this module's tests (each starts its read
    models afresh)."""
    for made in fresh_postgres_schema():
        b = Book(made, "forms", "2026-01-01T00:00:00")
        try:
            record_history(b)
        finally:
            b.close()
        yield made


def drop_read_models(url: str) -> None:
    schema = url.split("schema=")[1]
    with psycopg.connect(PG, autocommit=True) as conn:
        for name, kind in conn.execute("SELECT table_name, table_type FROM information_schema.tables "
                                       "WHERE table_schema = %s AND table_name LIKE 'rm\\_%%'", [schema]).fetchall():
            conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
                sql.SQL("VIEW" if kind == "VIEW" else "TABLE"), sql.Identifier(schema, name)))


def fresh(url: str, workers: int, batch: int = 500) -> Projections:
    """Read models built from nothing, partitioned from the first event on."""
    drop_read_models(url)
    p = Projections(eventsourcing_env(url), workers=workers, batch=batch)
    p.min_backlog = 0
    return p


def dump(p: Projections) -> dict[str, list[str]]:
    """Every row of every live read model as PostgreSQL's own text of the row, sorted."""
    out = {}
    with p.engine.connect() as conn:
        for model in ALL:
            for table in model.stable().values():
                out[table.name] = sorted(conn.execute(text(f'SELECT t::text FROM "{table.name}" t')).scalars())
    return out


def partition_rows(p: Projections) -> dict[str, dict[str, int]]:
    return {family: {name: at for name, at in running.view.positions().items() if "#" in name}
            for family, running in p.running.items()}


def caught_up(p: Projections) -> bool:
    return all(s["lag"] == 0 for s in p.status())


@pytest.mark.postgres
def test_partitioned_catch_up_and_rebuild_write_the_rows_of_a_single_process(url: str) -> None:
    with fresh(url, workers=2, batch=100) as p:
        head = p.head()
        assert head > 1500
        catch_up(p.source, list(p.running.values()), p.batch, fold=p.fold, stop=head // 3)  # part way, one process
        assert {p.position(f) for f in p.running} == {head // 3}
        partitions.reports.clear()
        taken = p.catch_up()
        assert len(partitions.reports) == 2  # two processes did it, not a single run
        assert caught_up(p) and set(taken.values()) == {head - head // 3}
        assert partition_rows(p) == {f: {} for f in p.running}  # folded into each read model's own position
        partitioned = dump(p)
        assert all(partitioned.values()) and sum(map(len, partitioned.values())) > 4000  # every table has rows
        p.rebuild(workers=1)
        assert dump(p) == partitioned
        partitions.reports.clear()
        p.rebuild(workers=2)
        assert len(partitions.reports) == 2
        assert caught_up(p) and partition_rows(p) == {f: {} for f in p.running}
        assert dump(p) == partitioned
    verified = CliRunner().invoke(project_cli, ["audit", "verify", "--db", url])
    assert verified.exit_code == 0, verified.output


def assert_each_workspace_a_prefix_of_its_events(p: Projections) -> None:
    """What readers may see during a partitioned run: each workspace's audit rows are its versions
    1..m with no gap, and its plan_state row is as of version m; workspaces differ in m."""
    with p.engine.connect() as conn:
        audited = {ws: (count, top) for ws, count, top in conn.execute(text(
            "SELECT workspace, COUNT(*), MAX(version) FROM rm_audit_trail GROUP BY workspace"))}
        states = dict(conn.execute(text("SELECT workspace, last_event_version FROM rm_plan_state")).all())
    assert audited and all(count == top for count, top in audited.values())
    assert states == {ws: top for ws, (_, top) in audited.items()}


def fail_in_partition_one(*args: Any) -> None:
    """partitions.work, except that partition 1 fails in its second batch (after committing one)."""
    if args[2] == 1:
        from projections import runner

        real, calls = runner.project_together, []

        def flaky(*a: Any, **kw: Any) -> Any:
            if calls:
                raise RuntimeError("partition 1 gave up")
            calls.append(1)
            return real(*a, **kw)
        runner.project_together = flaky  # type: ignore[assignment]
    partitions.work(*args)


@pytest.mark.postgres
@pytest.mark.parametrize("rerun_workers", [2, 1])
def test_a_failing_partition_moves_no_position_and_the_next_run_finishes_identically(url: str,
                                                                                     rerun_workers: int) -> None:
    with fresh(url, workers=2, batch=50) as p:
        p.partition_worker = fail_in_partition_one
        with pytest.raises(RuntimeError, match="partition 1 gave up") as failed:
            p.catch_up()
        assert "in projection partition 1 of 2" in "".join(getattr(failed.value, "__notes__", []))
        assert {p.position(f) for f in p.running} == {0}  # what readers see did not move
        kept = partition_rows(p)
        assert all(kept[f].get("subledger#1/2", 0) > 0 for f in p.running)  # its first batch is kept
        assert_each_workspace_a_prefix_of_its_events(p)
        p.partition_worker = None
        p.catch_up(workers=rerun_workers)  # 1: a single run finishes the partitions first, in-process
        assert caught_up(p) and partition_rows(p) == {f: {} for f in p.running}
        resumed = dump(p)
        p.rebuild(workers=1)
        assert dump(p) == resumed


def killed_in_partition_one(*args: Any) -> None:
    """partitions.work, except that partition 1's process is killed (kill -9) after its first batch."""
    if args[2] == 1:
        from projections import runner

        real = runner.project_together

        def dies(*a: Any, **kw: Any) -> Any:
            real(*a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)
        runner.project_together = dies  # type: ignore[assignment]
    partitions.work(*args)


@pytest.mark.postgres
def test_a_partition_killed_is_named_as_stopped_and_the_next_run_resumes(url: str) -> None:
    """It was reported as an internal error (a RuntimeError, exit 3 "unexpected") though nothing is lost."""
    with fresh(url, workers=2, batch=50) as p:
        p.partition_worker = killed_in_partition_one
        with pytest.raises(LedgerError) as stopped:
            p.catch_up()
        assert stopped.value.code == "unavailable"
        assert stopped.value.message.startswith("projection partition 1 of 2 stopped before finishing (killed by "
                                                "signal 9); what it projected is kept: run the command again")
        p.partition_worker = None
        p.catch_up(workers=2)
        assert caught_up(p) and partition_rows(p) == {f: {} for f in p.running}


@pytest.mark.postgres
@pytest.mark.parametrize("rerun_workers", [2, 1])
def test_read_models_left_by_runs_of_different_partition_counts_each_finish_with_their_own(
        url: str, rerun_workers: int) -> None:
    with fresh(url, workers=2, batch=100) as p:
        head, models = p.head(), list(p.running.values())
        catch_up(p.source, models[:2], 100, stop=head, partition=Partition(0, 2))
        catch_up(p.source, models[2:], 100, stop=head, partition=Partition(1, 3))
        assert partition_rows(p)[models[0].family] == {"subledger#0/2": head}
        assert partition_rows(p)[models[2].family] == {"subledger#1/3": head}
        p.catch_up(workers=rerun_workers)
        assert caught_up(p) and partition_rows(p) == {f: {} for f in p.running}
        finished = dump(p)
        p.rebuild(workers=1)
        assert dump(p) == finished


def slow_partitions(*args: Any) -> None:
    """partitions.work, a fifth of a second slower per batch."""
    from projections import runner

    real = runner.project_together

    def slow(*a: Any, **kw: Any) -> Any:
        time.sleep(0.2)
        return real(*a, **kw)
    runner.project_together = slow  # type: ignore[assignment]
    partitions.work(*args)


@pytest.mark.postgres
def test_a_single_run_beside_a_partitioned_one_finishes_the_partitions_with_it(url: str) -> None:
    """A read (any single catch-up) that starts while partitions run takes turns with them on each
    partition's lock, then moves the positions: nothing is projected twice or skipped."""
    with fresh(url, workers=2, batch=100) as p:
        p.partition_worker = slow_partitions
        outcome: list[Any] = []
        coordinator = threading.Thread(target=lambda: outcome.append(p.catch_up()))
        coordinator.start()
        try:
            with Projections(eventsourcing_env(url), workers=1) as reader:
                deadline = time.monotonic() + 60
                while not any(partition_rows(reader).values()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert coordinator.is_alive(), outcome
                reader.catch_up()
                assert caught_up(reader) and partition_rows(reader) == {f: {} for f in reader.running}
        finally:
            coordinator.join(120)
        assert outcome and caught_up(p) and partition_rows(p) == {f: {} for f in p.running}
        together = dump(p)
        p.rebuild(workers=1)
        assert dump(p) == together


def test_a_refusal_in_a_partition_reaches_the_coordinator_as_itself() -> None:
    """A partition's event_chain_broken (an event deleted by hand) came back as a RuntimeError,
    reported as internal_error, where one process reports the refusal."""
    from domain.errors import LedgerError

    error = LedgerError("event_chain_broken", "the stored events of acme go from version 3 to 5")
    arrived = partitions._portable(error)
    assert isinstance(arrived, LedgerError) and (arrived.code, arrived.message) == (error.code, error.message)


def sleeping_partition(*args: Any) -> None:
    """A partition that says it started (its pid, as a file's name), then works for two minutes."""
    Path(os.environ["PARTITION_PIDS"], str(os.getpid())).touch()
    time.sleep(120)


COORDINATOR = """
import sys
from adapters.settings import eventsourcing_env
from projections.runner import Projections
from tests.test_projection_partitions import sleeping_partition
p = Projections(eventsourcing_env(sys.argv[1]), workers=2)
p.min_backlog = 0
p.partition_worker = sleeping_partition
p.catch_up()
"""


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.postgres
def test_partitions_end_when_their_coordinator_is_killed(url: str, tmp_path: Path) -> None:
    """kill -9 of a partitioned catch-up left its partitions writing the tables of a run nobody
    led any more, beside the next run that resumes it."""
    drop_read_models(url)
    env = os.environ | {"PARTITION_PIDS": str(tmp_path)}
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR, url], env=env,
                                   cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline and coordinator.poll() is None:
        time.sleep(0.1)
    partitions_started = [int(found.name) for found in tmp_path.iterdir()]
    assert len(partitions_started) == 2
    coordinator.kill()
    coordinator.wait()
    deadline = time.monotonic() + 15
    while any(map(running, partitions_started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, partitions_started))


@pytest.mark.postgres
def test_sql_and_python_put_each_stream_in_the_same_partition(url: str) -> None:
    schema = url.split("schema=")[1]
    with Projections(eventsourcing_env(url), workers=1) as p:
        table = p.source.recorder.events_table_name
    with psycopg.connect(PG) as conn:
        streams = conn.execute(sql.SQL("SELECT DISTINCT originator_id, {} FROM {}").format(
            sql.SQL(SQL_BUCKET), sql.Identifier(schema, table))).fetchall()
    assert len(streams) > 16
    for n in (2, 3, 8):
        for stream, bucket in streams:
            assert Partition(bucket % n, n).holds(stream)
    assert len({bucket % 2 for _, bucket in streams}) == 2


@pytest.mark.postgres
def test_project_rebuild_and_catch_up_take_workers(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "MIN_BACKLOG", 0)
    drop_read_models(url)
    runner = CliRunner()
    caught = runner.invoke(project_cli, ["project", "--db", url, "--workers", "2", "--json"])
    assert caught.exit_code == 0, caught.output
    rebuilt = runner.invoke(project_cli, ["project", "rebuild", "--db", url, "--workers", "2", "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert '"lag": 0' in rebuilt.output and '"lag": 1' not in rebuilt.output


def test_workers_default_to_the_cores_on_postgres_and_one_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(partitions.WORKERS, raising=False)
    assert partitions.default_workers({"PERSISTENCE_MODULE": "eventsourcing.sqlite"}) == 1
    assert partitions.default_workers({"PERSISTENCE_MODULE": "eventsourcing.postgres"}) >= 1
    monkeypatch.setenv(partitions.WORKERS, "3")
    assert partitions.default_workers({"PERSISTENCE_MODULE": "eventsourcing.postgres"}) == 3
    monkeypatch.setenv(partitions.WORKERS, "many")
    with pytest.raises(ValueError, match=partitions.WORKERS):
        partitions.default_workers({})


def test_sqlite_read_models_are_caught_up_by_one_process_whatever_the_workers(tmp_path: Any) -> None:
    b = Book(f"sqlite:///{tmp_path}/ledger.db", "forms", "2026-01-01T00:00:00")
    try:
        record_history(b, workspaces=3)
        partitions.reports.clear()
        with Projections(eventsourcing_env(f"sqlite:///{tmp_path}/ledger.db"), source=b.ledger, workers=2) as p:
            p.min_backlog = 0
            p.catch_up()
            assert caught_up(p) and partition_rows(p) == {f: {} for f in p.running}
        assert partitions.reports == []  # no process was started
    finally:
        b.close()


def test_a_partition_whose_rows_are_filtered_by_the_client_reaches_the_head_it_was_given(tmp_path: Any) -> None:
    """Where the client filters (SQLite), a batch can hold fewer rows than asked long before the
    head: the partition goes on to the head, as the server-filtered one does."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-01-01T00:00:00")
    try:
        record_history(b, workspaces=3)
        with Projections(eventsourcing_env(db), source=b.ledger, workers=1) as p:
            head = p.head()
            catch_up(p.source, list(p.running.values()), 5, stop=head, fold=p.fold, partition=Partition(0, 2))
            assert partition_rows(p) == {f: {"subledger#0/2": head} for f in p.running}
    finally:
        b.close()
