"""Read-model catch-up on PostgreSQL: events projected per second into all five read models
(tracked, exactly-once, batches of 500), beside raw psycopg COPY of the same rows into
same-shaped tables in the same run. Prints both and their ratio.

    .venv/bin/python bench/projections.py [EVENTS]      # default 100000

Events are made quickly by running the aggregate directly (no per-command transaction):
each workspace subscribes, then renews monthly, and is saved in one transaction.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

# This file's name would shadow the `projections` package when run as a script.
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from adapters.settings import eventsourcing_env
from projections.runner import ALL, Projections

STEPS = (("add-payment-method", {"payment_method": "pm_card_visa"}),
         ("subscribe", {"plan": "team", "interval": "month", "seats": 3}),
         ("set-storage-addon", {"addon": "storage-100gb"}))


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
    pg = benchlib.postgres_base(args.db)
    target = args.events
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{pg}?schema={schema}"
    try:
        t0 = time.perf_counter()
        events = benchlib.generate(url, target, STEPS)
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
