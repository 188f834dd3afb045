"""The event feed (adapters/feed.py, docs/scaling.md): every stored event reaches the JetStream
stream exactly once and in log order, across a publisher killed at a random moment, a lost
tracking position and two publishers racing; a consumer in another process builds a read
model from the stream alone.

These need NATS with JetStream at 127.0.0.1:4222: skipped when it is unreachable, except
under CI=true, where they fail. Each test uses streams of its own and deletes them."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from adapters.app import read_models
from adapters.cli import app
from adapters.feed import FeedError, Publisher, tracking_recorder
from adapters.settings import eventsourcing_env
from projections.invoices import invoices_of
from tests.conftest import Book

ROOT = Path(__file__).resolve().parent.parent
NATS_URL = "nats://127.0.0.1:4222"
SEED = 11
pytestmark = pytest.mark.nats


def nats_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture
def nats_server() -> None:
    if not nats_available():
        if os.environ.get("CI") == "true":
            pytest.fail("NATS at 127.0.0.1:4222 is unreachable, and CI=true requires it")
        pytest.skip("NATS unreachable")


@pytest.fixture
def feed(nats_server: None) -> Iterator[dict[str, str]]:
    """A stream name and subject prefix of this test's own; the stream is deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    made = {"stream": f"TEST_FEED_{tag}", "prefix": f"test.{tag}"}
    yield made
    asyncio.run(delete_stream(made["stream"]))


async def delete_stream(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    await nc.close()


async def stream_messages(stream: str) -> list[dict[str, Any]]:
    """Every message of the stream, in stream order: sequence, subject, msg id, body."""
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    out = []
    try:
        last = (await js.stream_info(stream)).state.last_seq
        for seq in range(1, last + 1):
            msg = await js.get_msg(stream, seq)
            out.append({"seq": msg.seq, "subject": msg.subject, "msg_id": msg.headers["Nats-Msg-Id"],
                        "body": json.loads(msg.data)})
    finally:
        await nc.close()
    return out


def stream_count(stream: str) -> int:
    async def count() -> int:
        nc = await nats.connect(NATS_URL)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()
    return asyncio.run(count())


def history(b: Book, prefix: str, n: int) -> None:
    """n workspaces (one with a '.' in its id) that subscribe, change seats and plan, and renew."""
    for i in range(n):
        ws = f"{prefix}{i}" if i else f"{prefix}.eu"
        b.do(ws, "add-payment-method", payment_method="pm_card_visa")
        b.do(ws, "subscribe", plan="pro", interval="month")
        b.do(ws, "set-members", members=i % 4)
        if i % 3 == 0:
            b.do(ws, "change-plan", plan="team")


def publish_now(db_url: str, feed: dict[str, str], batch: int = 500) -> dict[str, Any]:
    """Publish in process; the feed's status, with what it logged."""
    logged: list[str] = []

    async def run() -> dict[str, Any]:
        async with Publisher(eventsourcing_env(db_url), stream=feed["stream"], subject_prefix=feed["prefix"],
                             batch=batch, log=logged.append) as p:
            await p.publish_pending()
            return {**p.status(), "log": logged}
    return asyncio.run(run())


def start_publisher(db_url: str, feed: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "feed", "publish", "--db", db_url, "--stream", feed["stream"],
         "--subject-prefix", feed["prefix"], *extra],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def following(publisher: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The publisher once it follows (its signal handlers are set); what it logged before is kept."""
    assert publisher.stderr is not None
    publisher.logged = b""  # type: ignore[attr-defined]
    while b"following" not in publisher.logged:  # type: ignore[attr-defined]
        line = publisher.stderr.readline()
        assert line, f"the publisher stopped before following: {publisher.wait(30)}"
        publisher.logged += line  # type: ignore[attr-defined]
    return publisher


def wait_until(check: Any, timeout: float = 60.0) -> None:  # ok-float: seconds
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def in_slices_until(process: subprocess.Popen[bytes], check: Any, timeout: float = 60.0) -> None:  # ok-float
    """Let `process` run in slices of a few milliseconds, stopped (SIGSTOP) while `check` looks:
    on a loaded machine a check that takes long would let it run on to the end."""
    deadline = time.monotonic() + timeout
    while True:
        process.send_signal(signal.SIGSTOP)
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        process.send_signal(signal.SIGCONT)
        time.sleep(0.005)


def assert_whole_log_once_in_order(b: Book, feed: dict[str, str]) -> list[dict[str, Any]]:
    """The stream holds every stored event once, in notification order; each workspace's
    versions follow on 1, 2, 3...; subjects and msg ids name the workspace and notification."""
    stored = [n.id for n in b.ledger.recorder.select_notifications(start=1, limit=1_000_000)]
    messages = asyncio.run(stream_messages(feed["stream"]))
    ids = [m["body"]["notification_id"] for m in messages]
    assert stored == list(range(1, len(stored) + 1))
    assert ids == stored
    assert [m["msg_id"] for m in messages] == [str(i) for i in ids]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    versions: dict[str, list[int]] = {}
    for m in messages:
        ws = m["body"]["workspace"]
        if ws is not None:
            versions.setdefault(ws, []).append(m["body"]["version"])
            assert m["subject"] == f"{feed['prefix']}.events.{ws.replace('.', '%2E')}"
    assert versions and all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert set(versions) == set(b.ledger.workspaces())
    return messages


def test_every_event_is_published_exactly_once_across_a_killed_publisher(db_url: str, feed: dict[str, str]) -> None:
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 30)  # enough events that the publisher is still at work when it is killed
        b.at("2026-05-02T00:00:00")  # renewals: invoices and payments
        head = b.ledger.recorder.max_notification_id()
        kill_after = random.Random(SEED).randint(head // 5, head // 3)
        publisher = start_publisher(db_url, feed, "--batch", "1", "--follow", "--poll", "0.05")
        try:
            in_slices_until(publisher, lambda: stream_count(feed["stream"]) >= kill_after)
            publisher.send_signal(signal.SIGKILL)
            publisher.wait(10)
        finally:
            publisher.kill()
        at_kill = stream_count(feed["stream"])
        assert at_kill < head, "the publisher finished before it was killed"

        history(b, "b", 3)  # written while no publisher runs
        publisher = start_publisher(db_url, feed, "--batch", "7", "--follow", "--poll", "0.05")
        try:
            wait_until(lambda: stream_count(feed["stream"]) == b.ledger.recorder.max_notification_id())
            history(b, "c", 2)  # written while it follows
            wait_until(lambda: stream_count(feed["stream"]) == b.ledger.recorder.max_notification_id())
        finally:
            publisher.send_signal(signal.SIGTERM)
            out, err = publisher.communicate(timeout=30)
        assert publisher.returncode == 0, err.decode()[-2000:]
        status = json.loads(out)
        assert status["lag"] == 0 and status["tracked"] == status["head"] == b.ledger.recorder.max_notification_id()
        assert_whole_log_once_in_order(b, feed)
    finally:
        b.close()


def test_a_publisher_that_lost_its_position_publishes_nothing_twice(tmp_path: Path, feed: dict[str, str]) -> None:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 4)
        first = publish_now(db_url, feed)
        assert first["published"] == first["head"] == b.ledger.recorder.max_notification_id()
        recorder = tracking_recorder(eventsourcing_env(db_url), feed["stream"])
        with recorder.datastore.engine.begin() as conn:  # the position is gone (a restored backup, say)
            conn.execute(text(f"DELETE FROM {recorder.tracking_table_name}"))
        recorder.datastore.engine.dispose()
        history(b, "b", 2)
        again = publish_now(db_url, feed, batch=3)
        assert any(f"resuming after {first['head']}" in line for line in again["log"]), again["log"]
        assert again["published"] == again["head"] - first["head"] > 0
        assert again["tracked"] == again["head"]
        assert_whole_log_once_in_order(b, feed)
    finally:
        b.close()


class Died(BaseException):
    """The publisher's process ends here (raised past every handler, like a kill)."""


def publish_dying(db_url: str, feed: dict[str, str], batch: int, *, record: bool = True,
                  fail_at: int | None = None) -> dict[str, Any]:
    """Publish in process with a fault: dying instead of recording the position (`record=False`),
    or the `fail_at`-th message of the run lost on its way to the stream."""

    async def run() -> dict[str, Any]:
        async with Publisher(eventsourcing_env(db_url), stream=feed["stream"], subject_prefix=feed["prefix"],
                             batch=batch, timeout=1.0) as p:  # a lost message's ack never comes
            if not record:
                p.record = lambda _: (_ for _ in ()).throw(Died())  # type: ignore[method-assign]
            real, calls = p.js.publish_async, []

            async def publish_async(subject: str, *args: Any, **kwargs: Any) -> Any:
                calls.append(1)
                if len(calls) == fail_at:  # lost on the way: no stream takes this subject
                    subject = f"{feed['prefix']}_lost"
                return await real(subject, *args, **kwargs)
            p.js.publish_async = publish_async
            with pytest.raises((Died, FeedError)):
                await p.publish_pending()
            return p.status()
    return asyncio.run(run())


def test_a_publisher_dying_between_the_ack_and_recording_its_position_repeats_nothing(
        tmp_path: Path, feed: dict[str, str]) -> None:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 3)
        died = publish_dying(db_url, feed, batch=5, record=False)
        held = stream_count(feed["stream"])
        assert died["tracked"] == 0 and 5 <= held < died["head"]  # acked, never recorded
        again = publish_now(db_url, feed)
        assert any(f"resuming after {held}" in line for line in again["log"]), again["log"]
        assert again["published"] == again["head"] - held
        assert_whole_log_once_in_order(b, feed)
    finally:
        b.close()


def test_a_publish_failing_mid_batch_leaves_the_stream_a_gapless_prefix(tmp_path: Path, feed: dict[str, str]) -> None:
    """Message 7 of a batch is lost, 8-10 arrive: each must follow the sequence before it, so
    the stream refuses them rather than hold 8 without 7; the next run publishes 7 onwards."""
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 3)
        failed = publish_dying(db_url, feed, batch=10, fail_at=7)
        assert failed["position"] == failed["tracked"] == stream_count(feed["stream"]) == 6
        publish_now(db_url, feed)
        assert_whole_log_once_in_order(b, feed)
    finally:
        b.close()


def test_two_publishers_racing_publish_each_event_once(tmp_path: Path, feed: dict[str, str]) -> None:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 1)
        racers = [following(start_publisher(db_url, feed, "--batch", str(size), "--follow", "--poll", "0.02"))
                  for size in (2, 3)]
        try:
            wait_until(lambda: stream_count(feed["stream"]) == b.ledger.recorder.max_notification_id())
            history(b, "b", 8)  # both see each new event and race to publish it
            wait_until(lambda: stream_count(feed["stream"]) == b.ledger.recorder.max_notification_id())
        finally:
            for p in racers:
                p.send_signal(signal.SIGTERM)
            outcomes = [(p.communicate(timeout=30), p.returncode) for p in racers]
        assert all(code == 0 for _, code in outcomes), [err.decode()[-1000:] for (_, err), _ in outcomes]
        published = [json.loads(out)["published"] for (out, _), _ in outcomes]
        assert sum(published) == b.ledger.recorder.max_notification_id()
        assert_whole_log_once_in_order(b, feed)
    finally:
        b.close()


def consume(feed: dict[str, str], path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "feed_consumer.py"), "--stream", feed["stream"], "--db", str(path),
         "--subject-prefix", feed["prefix"], "--durable", "plans", "--batch", "16", "--until-caught-up"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plans_read_model(path: Path) -> dict[str, tuple[str | None, Decimal]]:
    with sqlite3.connect(path) as conn:
        return {ws: (plan, Decimal(paid)) for ws, plan, paid in
                conn.execute("SELECT workspace, plan, paid_total FROM workspaces")}


def ledger_view(b: Book) -> dict[str, tuple[str | None, Decimal]]:
    """Each workspace's plan, and the total paid on its invoices per the ledger's own read model."""
    with read_models(b.ledger) as projections, projections.engine.connect() as conn:
        projections.catch_up()
        return {ws: (b.ledger.get(ws).plan, sum((Decimal(i["amount_paid"]) for i in invoices_of(conn, ws)), Decimal(0)))
                for ws in b.ledger.workspaces()}


def test_the_consumer_example_started_before_the_stream_says_so(tmp_path: Path, feed: dict[str, str]) -> None:
    """It crashed with NATS's traceback ("stream not found"), on an example teams copy."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "feed_consumer.py"), "--stream", feed["stream"],
                           "--db", str(tmp_path / "plans.sqlite")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (f"error: there is no stream {feed['stream']!r} yet: `subledger feed publish` "
                           "creates it\n")


def test_a_consumer_in_another_process_builds_plans_and_payments_from_the_stream_alone(
        tmp_path: Path, feed: dict[str, str]) -> None:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    plans = tmp_path / "plans.sqlite"
    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    try:
        history(b, "a", 6)
        b.at("2026-05-02T00:00:00")
        publish_now(db_url, feed)
        first = consume(feed, plans)
        assert first["notification_id"] == b.ledger.recorder.max_notification_id()
        assert plans_read_model(plans) == ledger_view(b)
        assert any(paid > 0 for _, paid in plans_read_model(plans).values())

        b.do("a1", "change-plan", plan="team")  # the durable consumer resumes where it acked
        b.at("2026-06-02T00:00:00")
        publish_now(db_url, feed)
        second = consume(feed, plans)
        assert second["applied"] == second["stream_seq"] - first["stream_seq"] > 0
        assert plans_read_model(plans) == ledger_view(b)
    finally:
        b.close()


@pytest.mark.postgres
def test_the_feed_benchmark_runs_and_reports_a_ratio(nats_server: None, pg_url: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "feed.py"), "300", "--db", pg_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "feed publish" in done.stdout and "ratio" in done.stdout


def test_the_cli_refuses_a_bad_stream_name_and_a_stream_that_is_not_the_feeds(
        tmp_path: Path, feed: dict[str, str]) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    runner = CliRunner()
    bad = runner.invoke(app, ["feed", "publish", "--db", db, "--stream", "bad.name"])
    assert bad.exit_code == 2 and "stream name 'bad.name'" in bad.output
    mine = runner.invoke(app, ["feed", "publish", "--db", db, "--stream", feed["stream"],
                               "--subject-prefix", feed["prefix"]])
    assert mine.exit_code == 0, mine.output
    assert json.loads(mine.stdout)["lag"] == 0
    other = runner.invoke(app, ["feed", "publish", "--db", db, "--stream", feed["stream"],
                                "--subject-prefix", f"{feed['prefix']}_other"])
    assert other.exit_code == 1 and "exists without the subjects" in other.output


def test_nats_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    async def run() -> None:
        async with Publisher(eventsourcing_env(f"sqlite:///{tmp_path}/ledger.db"), nats_url="nats://127.0.0.1:1",
                             timeout=1.0):
            pass
    with pytest.raises(FeedError, match="NATS at nats://127.0.0.1:1 is unreachable"):
        asyncio.run(run())
