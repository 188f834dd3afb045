"""Money moves exactly once with real processes on PostgreSQL: four workers charge the same two
workspaces at once through one persisted test gateway, and one of them is killed with SIGKILL
at random moments (seeded), then `subledger payments resolve` records what the gateway did.

Every worker runs tests/payments_worker.py on a test clock at the same instant, so nothing here
depends on wall time, except `payments resolve`: the CLI runs on the system clock, so it also
records the renewals due since that instant, which the invariants must (and do) survive.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from adapters.app import build_ledger
from adapters.payments import TestPaymentGateway
from domain.commands import parse_command
from domain.ledger import Ledger, TestClock
from domain.subscription import Subscription
from tests.conftest import ADMIN, PG
from tests.payment_checks import key_problems, money_problems, pending_count
from tests.payments_worker import INSTANT, WORKSPACES

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "payments_worker.py"
WORKERS = 4
COMMANDS = 50
KILL_SEED = int(os.environ.get("PAYMENTS_KILL_SEED", "2031"))


def start_worker(url: str, index: int, *, barrier: Path | None = None, pause: float = 0.0,  # ok-float: seconds
                 count: int = COMMANDS) -> subprocess.Popen[str]:
    args = [sys.executable, str(WORKER), url, "--index", str(index), "--count", str(count)]
    if barrier is not None:
        args += ["--barrier", str(barrier)]
    if pause:
        args += ["--pause-after-charge", str(pause)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(barrier: Path, workers: list[subprocess.Popen[str]]) -> None:
    """Until every worker has built its ledger and waits at (or has passed) the barrier."""
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < len(workers):
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers if w.poll() is not None]
        assert time.monotonic() < deadline, "the workers did not start within 60 s"
        time.sleep(0.02)


def release(barrier: Path, workers: list[subprocess.Popen[str]]) -> None:
    """Let the workers go together, once every one has built its ledger."""
    wait_ready(barrier, workers)
    (barrier / "go").touch()


def finished(worker: subprocess.Popen[str]) -> dict[str, int]:
    """What a worker saw; it must not have raised (IdempotencyMismatch included)."""
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, f"worker {worker.args} exited {worker.returncode}:\n{err}"
    assert "Traceback" not in err and "IdempotencyMismatch" not in err, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    """Two workspaces of the workspace catalog with a good card, on team with 3 seats."""
    made = build_ledger(pg_url, catalog="workspace", clock=TestClock(INSTANT))
    for ws in WORKSPACES:
        for name, args in (("add-payment-method", {"payment_method": "pm_card_visa"}),
                           ("subscribe", {"plan": "team", "interval": "month", "seats": 3})):
            assert made.handle(ws, parse_command(name, args), ADMIN).ok
    yield made
    made.close()


def gateway_rows(url: str) -> list[dict[str, Any]]:
    gateway = TestPaymentGateway(url)
    try:
        return gateway.charges()
    finally:
        gateway.close()


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    schema = parse_qs(urlparse(url).query)["schema"][0]
    with psycopg.connect(PG) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(query, params or None).fetchall()


def assert_money_moved_once(url: str, run: str = "") -> None:
    """The invariants, in SQL on the gateway's table and through a fresh ledger's facts."""
    fresh = build_ledger(url, catalog="workspace", clock=TestClock(INSTANT))
    try:
        collected = dict(sql(url, "SELECT workspace_id, sum(amount) FROM test_gateway_charges "
                                  "WHERE outcome = 'succeeded' GROUP BY workspace_id"))
        recorded = {ws: sum((e.amount for e in fresh.workspace_events(ws) if isinstance(e, Subscription.PaymentSucceeded)),
                            Decimal(0)) for ws in WORKSPACES}
        assert collected == recorded, run
        twice = sql(url, "SELECT split_part(idempotency_key, ':', 1), split_part(idempotency_key, ':', 2), count(*) "
                         "FROM test_gateway_charges WHERE outcome = 'succeeded' GROUP BY 1, 2 HAVING count(*) > 1")
        assert twice == [], run
        assert sql(url, "SELECT idempotency_key FROM test_gateway_charges WHERE outcome = 'action_required'") == [], run
        assert money_problems(fresh, gateway_rows(url)) == [], run
        assert key_problems(fresh) == [], run
        assert pending_count(fresh) == 0, run
    finally:
        fresh.close()


def test_four_processes_charging_the_same_workspaces_move_money_exactly_once(
        ledger: Ledger, pg_url: str, tmp_path: Path) -> None:
    workers = [start_worker(pg_url, i, barrier=tmp_path) for i in range(WORKERS)]
    release(tmp_path, workers)
    seen = [finished(w) for w in workers]
    assert sum(s.get("ok", 0) for s in seen) > 0, seen
    ledger.resolve_payments()
    assert_money_moved_once(pg_url)
    assert len([r for r in gateway_rows(pg_url) if r["outcome"] == "succeeded"]) > len(WORKSPACES)


def test_a_worker_killed_between_charge_and_record_is_resolved_by_the_cli(
        ledger: Ledger, pg_url: str, tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    workers = [start_worker(pg_url, i, barrier=tmp_path, pause=0.1 if i == 0 else 0.0) for i in range(WORKERS)]
    release(tmp_path, workers)
    kills = 0
    for n in range(rng.randint(1, 3)):
        time.sleep(rng.uniform(0.3, 1.5))
        if workers[0].poll() is not None:
            break
        workers[0].send_signal(signal.SIGKILL)
        workers[0].communicate(timeout=30)
        kills += 1
        time.sleep(rng.uniform(0.2, 1.5))
        restart = tmp_path / f"restart-{n}"
        restart.mkdir()
        (restart / "go").touch()
        workers[0] = start_worker(pg_url, 0, barrier=restart, pause=0.1)  # replays its stream by key
        wait_ready(restart, workers[:1])
    assert kills >= 1, f"seed {KILL_SEED}: worker 0 finished before the first kill"
    for worker in workers:
        finished(worker)

    # One more death, certainly in the window: charged, not yet recorded, nobody writing after it.
    last = start_worker(pg_url, WORKERS, pause=60, count=COMMANDS)
    assert last.stdout is not None
    line = last.stdout.readline()
    assert line.startswith("charged "), (line, last.communicate())
    last.send_signal(signal.SIGKILL)
    last.communicate(timeout=30)
    key = line.split()[1]
    pending = [p["charge_key"] for ws in WORKSPACES for p in ledger.get(ws).pending_charges.values()]
    assert key in pending
    assert sql(pg_url, "SELECT outcome FROM test_gateway_charges WHERE idempotency_key = %s", key) == [
        (line.split()[2],)]  # the gateway answered; the ledger never heard it

    cli = Path(sys.executable).parent / "subledger"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "adapters.cli"]
    done = subprocess.run([*command, "--db", pg_url, "--json", "payments", "resolve"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"SUBLEDGER_TEST_CLOCK": INSTANT.isoformat()})  # a test ledger
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert_money_moved_once(pg_url, f"kill seed {KILL_SEED}")
