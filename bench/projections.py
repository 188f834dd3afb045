"""Read-model catch-up on PostgreSQL: events projected per second into all five read models
(tracked, exactly-once, batches of 500), beside raw psycopg COPY of the same rows into
same-shaped tables in the same run. Prints both and their ratio.

    .venv/bin/python bench/projections.py [EVENTS]      # default 100000

Events are made quickly by running the aggregate directly (no per-command transaction):
each workspace subscribes, then renews monthly, and is saved in one transaction.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

# This file's name would shadow the `projections` package when run as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from adapters.app import build_ledger
from adapters.settings import eventsourcing_env
from domain.payments import ChargeResult
from domain.commands import Actor, parse_command
from domain.ledger import TestClock
from projections.runner import ALL, Projections

PG = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = Actor(id="bench", role="admin")
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def generate(url: str, target: int) -> int:
    """Record about `target` events; returns the head of the notification log."""
    clock = TestClock(START)
    ledger = build_ledger(url, catalog="workspace", clock=clock)
    end = START + timedelta(days=365 * 2)
    i = 0
    while (ledger.recorder.max_notification_id() or 0) < target:
        ws = f"ws{i}"
        i += 1
        sub = ledger._new(ws, ADMIN, "api")  # noqa: SLF001 (bench: bypass per-command transactions)
        for name, args in (("add-payment-method", {"payment_method": "pm_card_visa"}),
                           ("subscribe", {"plan": "team", "interval": "month", "seats": 3}),
                           ("set-storage-addon", {"addon": "storage-100gb"})):
            ctx = ledger._context(sub, ADMIN, "api", name, None, None, None, None)  # noqa: SLF001
            sub.record(sub.decide(parse_command(name, args), ctx), ctx)
            for invoice_id in list(sub.pending_charges):
                sub.settle(invoice_id, ChargeResult("succeeded", charge_id="ch_bench"), ctx)
        ctx = ledger._context(sub, ADMIN, "api", "advance", None, None, None, None)  # noqa: SLF001
        sub.process_due(ctx.system(end, "advance"), forecast=True)
        ledger._save(sub, list(sub.pending_events))  # noqa: SLF001
    head = ledger.recorder.max_notification_id() or 0
    ledger.close()
    return head


def project(url: str) -> tuple[float, int]:
    env = eventsourcing_env(url)
    start = time.perf_counter()
    with Projections(env) as p:
        p.catch_up()
        assert all(s["lag"] == 0 for s in p.status())
    return time.perf_counter() - start, 0


def copy_same_rows(pg: str, schema: str) -> tuple[float, int]:
    """COPY every row the read models hold into empty same-shaped tables, one transaction."""
    tables = [name for model in ALL for name in (model.table_name(t, f"v{model.version}") for t in model.tables)]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        data = {t: conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))).fetchall() for t in tables}
        for t in tables:
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(f"copy_{t}"), sql.Identifier(t)))
        rows = sum(len(v) for v in data.values())
        start = time.perf_counter()
        with conn.transaction():
            for t, records in data.items():
                with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(f"copy_{t}"))) as copy:
                    for record in records:
                        copy.write_row(record)
        return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Read-model catch-up as a ratio of raw COPY of the same rows.")
    parser.add_argument("events", nargs="?", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB if PostgreSQL, else "
                        "the local server's test database); the benchmark uses a schema of its own")
    args = parser.parse_args()
    env_db = os.environ.get("SUBLEDGER_DB", "")
    pg = (args.db or (env_db if env_db.startswith("postgres") else PG)).split("?")[0]
    target = args.events
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{pg}?schema={schema}"
    try:
        t0 = time.perf_counter()
        events = generate(url, target)
        print(f"generated {events} events in {time.perf_counter() - t0:.1f}s")
        projected, _ = project(url)
        copied, rows = copy_same_rows(pg, schema)
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"catch-up of {events} events into {len(ALL)} read models ({rows} rows): {projected:.1f}s")
    print(f"projected       {events / projected:10.0f} events/s  ratio {copied / projected:.3f}")
    print(f"raw psycopg COPY of the same rows: {events / copied:10.0f} events/s  ratio 1.000"
          f"  ({rows / copied:.0f} rows/s)")


if __name__ == "__main__":
    main()
