"""Commands per second through the Ledger, on SQLite and PostgreSQL, beside baselines
measured in the same run: raw psycopg single-row INSERT transactions, and one client with the
aggregate cache and group commit turned off (what one process did before them). Prints ratios,
for a command that moves no money and for one that charges (decide, request, charge, record:
two transactions and a gateway call, docs/payments.md); then set-members on PostgreSQL from
1, 2, 4, 8, 16 and 32 client threads in one process (16 and 32: how one process goes on
growing past the goal's 8, docs/scaling.md), and from 2 processes (1 and 4 threads each).

    .venv/bin/python bench/commands.py [N] [--db postgresql://user@host:port/db] [--quick]

The PostgreSQL database comes from --db, else $SUBLEDGER_DB if it is a PostgreSQL URL, else
the local server's `test` database; the benchmark works in a schema of its own, dropped after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# bench/projections.py would shadow the `projections` package when this runs as a script.
sys.path.insert(0, str(Path(__file__).resolve().parent))  # a spawned worker process starts without it
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402
from domain.ledger import TestClock  # noqa: E402

ADMIN = Actor(id="bench", role="admin")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKSPACES = 64
LEGACY = {"SUBLEDGER_AGGREGATE_CACHE": "0", "SUBLEDGER_GROUP_COMMIT": "n"}
"""One command per transaction and every workspace loaded from the store: as before issue 11."""


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def raw_psycopg_inserts(pg: str, schema: str, n: int) -> float:
    """Single-row INSERT transactions per second over one psycopg connection."""
    table = f'"{schema}".bench_{uuid.uuid4().hex[:8]}'
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial primary key, ws text, body jsonb)")
        try:
            start = time.perf_counter()
            for i in range(n):
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} (ws, body) VALUES (%s, %s)", (f"ws{i % 10}", '{"members": 1}'))
            return n / (time.perf_counter() - start)
        finally:
            conn.execute(f"DROP TABLE {table}")


def ledger_commands(url: str, n: int, charging: bool) -> float:
    """Commands per second on ten workspaces on a paid plan: set-members (load, decide, save:
    one transaction) or, `charging`, buy-ai-credits (load, decide, save the request, charge the
    test gateway, save the outcome)."""
    clock = TestClock(START)
    ledger = build_ledger(url, catalog="workspace", clock=clock)
    workspaces = [f"ws{i}" for i in range(10)]
    for ws in workspaces:
        ledger.handle(ws, parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), ADMIN)
        ledger.handle(ws, parse_command("subscribe", {"plan": "team", "interval": "month", "seats": 2}), ADMIN)
    start = time.perf_counter()
    for i in range(n):
        command = parse_command("buy-ai-credits", {"pack": "ai-1000"}) if charging else \
            parse_command("set-members", {"members": i % 3})
        result = ledger.handle(workspaces[i % 10], command, ADMIN)
        assert result.ok, result.error
    rate = n / (time.perf_counter() - start)
    ledger.close()
    return rate


def seed(url: str) -> None:
    ledger = build_ledger(url, catalog="workspace", clock=TestClock(START))
    for i in range(WORKSPACES):
        ledger.handle(f"c{i}", parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), ADMIN)
        ledger.handle(f"c{i}", parse_command("subscribe", {"plan": "team", "interval": "month", "seats": 2}), ADMIN)
    ledger.close()


def clients(url: str, n: int, threads: int, part: int = 0, parts: int = 1, go: Any = None,
            ready: Any = None) -> float:
    """`threads` clients in this process, each sending n/threads set-members on workspaces of
    its own (a share of WORKSPACES, split between `parts` processes); commands per second.
    With `go`, it says so on `ready` once its ledger is built and warm, then waits for `go`."""
    ledger = build_ledger(url, catalog="workspace", clock=TestClock(START))
    per = max(1, n // threads)
    ledger.get("c0")  # the connection pool and catalogs warm
    mine = [[f"c{i}" for i in range(WORKSPACES) if i % (threads * parts) == part * threads + t] for t in range(threads)]
    failures: list[Any] = []

    def client(t: int) -> None:
        for i in range(per):
            result = ledger.handle(mine[t][i % len(mine[t])], parse_command("set-members", {"members": i % 5}), ADMIN)
            if not result.ok:
                failures.append(result.error)

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    if go is not None:
        ready.put(part)
        go.wait()
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = per * threads / (time.perf_counter() - start)
    ledger.close()
    assert not failures, failures[:3]
    return rate


def _process(url: str, runs: list[tuple[int, int]], part: int, parts: int, gos: list[Any], ready: Any,
             out: Any) -> None:
    for (n, threads), go in zip(runs, gos):
        out.put(clients(url, n, threads, part, parts, go, ready))


def _gather(source: Any, count: int, procs: list[Any]) -> list[Any]:
    """`count` items from `source`, failing as soon as a process failed instead of answering."""
    got: list[Any] = []
    while len(got) < count:
        try:
            got.append(source.get(timeout=0.5))
        except queue.Empty:
            # a process that answered every run may already have exited (0): only a failure stops
            assert all(p.exitcode in (None, 0) for p in procs), [p.exitcode for p in procs]
    return got


def processes(url: str, runs: dict[int, int], parts: int = 2) -> dict[int, float]:
    """For each threads -> n of `runs`, `parts` processes of `threads` clients each, released
    together; total commands per second. The same processes serve every run, each run starting
    once every process has built its ledger: a spawned process starts in seconds, the runs
    take a fraction of one at test sizes."""
    ctx = multiprocessing.get_context("spawn")
    plan = [(n // parts, threads) for threads, n in runs.items()]
    gos, ready, out = [ctx.Event() for _ in plan], ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(url, plan, p, parts, gos, ready, out)) for p in range(parts)]
    for p in procs:
        p.start()
    rates = {}
    for (n, threads), go in zip(plan, gos):
        _gather(ready, parts, procs)
        start = time.perf_counter()
        go.set()
        _gather(out, parts, procs)
        rates[threads] = n // threads * threads * parts / (time.perf_counter() - start)
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description="Ledger commands/s as ratios of raw insert transactions.")
    parser.add_argument("n", nargs="?", type=int, default=500)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB or the local test db)")
    parser.add_argument("--quick", action="store_true", help="skip SQLite and the charging command")
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    n = args.n
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    schemas = [schema, f"{schema}_0", f"{schema}_1", f"{schema}_c", f"{schema}_l"]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        baseline = raw_psycopg_inserts(pg, schema, n)
        rates = {}
        for charging in () if args.quick else (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                rates["SQLite", charging] = ledger_commands(f"sqlite:///{tmp}/bench.db", n, charging)
            rates["PostgreSQL", charging] = ledger_commands(f"{pg}?schema={schema}_{int(charging)}", n, charging)
        legacy_url, url = f"{pg}?schema={schema}_l", f"{pg}?schema={schema}_c"
        with environ(LEGACY):
            seed(legacy_url)
            legacy = clients(legacy_url, n, 1)
        seed(url)
        threaded = {t: clients(url, n * max(1, t // 2), t) for t in (1, 2, 4, 8, 16, 32)}
        spread = processes(url, {t: n * max(1, t // 2) * 2 for t in (1, 4)})
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            for name in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    print(f"n = {n} per run; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"baseline  raw psycopg single-row insert transactions:   {baseline:9.0f}/s  ratio 1.00")
    for db in ("SQLite", "PostgreSQL") if rates else ():
        plain, paid = rates[db, False], rates[db, True]
        print(f"ledger    set-members (no money) on {db:<10}:          {plain:9.0f}/s  ratio {plain / baseline:.2f}")
        print(f"ledger    buy-ai-credits (two-step charge) on {db:<10}: {paid:9.0f}/s  ratio {paid / baseline:.2f}"
              f"  ({paid / plain:.2f} of set-members)")
    print(f"PostgreSQL set-members, {WORKSPACES} workspaces; x: ratio to the legacy single client")
    print(f"legacy    1 client, no cache, no group commit:          {legacy:9.0f}/s  ratio {legacy / baseline:.2f}"
          "  x1.00")
    for t, rate in threaded.items():
        label = f"1 process {t} client{'s' if t > 1 else ''} (threads):"
        print(f"{label:<56}{rate:9.0f}/s  "
              f"ratio {rate / baseline:.2f}  x{rate / legacy:.2f}  ({rate / threaded[1]:.2f} of 1 client)")
    for t, rate in spread.items():
        label = f"2 processes x {t} client{'s' if t > 1 else ''}:"
        print(f"{label:<56}{rate:9.0f}/s  "
              f"ratio {rate / baseline:.2f}  x{rate / legacy:.2f}  ({rate / threaded[1]:.2f} of 1 client)")


if __name__ == "__main__":
    main()
