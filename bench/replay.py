"""`replay rebuild --verify` of every read model, in events per second, beside the library's raw
notification-log read of the same events (`recorder.select_notifications`, paged as the rebuild
pages) measured in the same run. Prints both and their ratio.

    .venv/bin/python bench/replay.py [EVENTS] [--db URL]      # default 100000

The database comes from --db, else $SUBLEDGER_DB, else the local PostgreSQL `test` database;
the benchmark works in a schema of its own (a file of its own for SQLite), dropped after.
Events are made as bench/projections.py makes them (the aggregate run directly, one
transaction per workspace); the read models are built once, then rebuilt and compared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

# bench/projections.py would shadow the `projections` package when this runs as a script.
HERE = Path(__file__).resolve().parent
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import psycopg  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from adapters.settings import eventsourcing_env  # noqa: E402
from projections.runner import Projections  # noqa: E402
from replay.rebuild import rebuild  # noqa: E402

PAGE = 500
STEPS = (("add-payment-method", {"payment_method": "pm_card_visa"}),
         ("subscribe", {"plan": "team", "interval": "month", "seats": 3}),
         ("set-storage-addon", {"addon": "storage-100gb"}))
"""The events bench/projections.py makes."""


def raw_read(url: str) -> tuple[float, int]:
    """Seconds to page through the whole notification log, and how many notifications."""
    ledger = build_ledger(url)
    try:
        start, n, began = 1, 0, time.perf_counter()
        while True:
            page = ledger.recorder.select_notifications(start=start, limit=PAGE)
            if not page:
                break
            n += len(page)
            start = page[-1].id + 1
        return time.perf_counter() - began, n
    finally:
        ledger.close()


def rebuild_verify(url: str) -> tuple[float, bool]:
    with Projections(eventsourcing_env(url), batch=PAGE) as p:
        p.catch_up()
        began = time.perf_counter()
        report = rebuild(p, verify=True)
        return time.perf_counter() - began, report["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description="replay rebuild --verify events/s as a ratio of a raw log read.")
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="Database URL (default: $SUBLEDGER_DB or the local test db)")
    args = parser.parse_args()
    base = args.db or os.environ.get("SUBLEDGER_DB") or benchlib.postgres_base(None)
    workdir = tempfile.TemporaryDirectory()
    if base.startswith("postgres"):
        pg = base.split("?")[0]
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        url = f"{pg}?schema={schema}"
    else:
        pg = schema = None
        url = f"sqlite:///{workdir.name}/replay-bench.db"
    try:
        began = time.perf_counter()
        events = benchlib.generate(url, args.n, STEPS)
        print(f"generated {events} events in {time.perf_counter() - began:.1f}s ({url.split('?')[0].split(':')[0]})")
        read, notifications = raw_read(url)
        rebuilt, same = rebuild_verify(url)
    finally:
        if pg and schema:
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        workdir.cleanup()
    assert same, "the rebuilt read models differ from the live ones"
    print(f"replay rebuild --verify of {events} events (5 read models, compared row by row): {rebuilt:.1f}s")
    print(f"rebuild --verify  {events / rebuilt:10.0f} events/s  ratio {read / rebuilt:.4f}")
    print(f"raw notification-log read of the same {notifications} events: {notifications / read:10.0f} events/s"
          f"  ratio 1.0000")


if __name__ == "__main__":
    main()
