"""Commands per second through the Ledger, on SQLite and PostgreSQL, beside a baseline
measured in the same run: raw psycopg single-row INSERT transactions. Prints ratios, for a
command that moves no money and for one that charges (decide, request, charge, record: two
transactions and a gateway call, docs/payments.md).

    .venv/bin/python bench/commands.py [N] [--db postgresql://user@host:port/db]

The PostgreSQL database comes from --db, else $SUBLEDGER_DB if it is a PostgreSQL URL, else
the local server's `test` database; the benchmark works in a schema of its own, dropped after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

# bench/projections.py would shadow the `projections` package when this runs as a script.
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402
from domain.ledger import TestClock  # noqa: E402

ADMIN = Actor(id="bench", role="admin")


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
    clock = TestClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Ledger commands/s as ratios of raw insert transactions.")
    parser.add_argument("n", nargs="?", type=int, default=500)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB or the local test db)")
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    n = args.n
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        baseline = raw_psycopg_inserts(pg, schema, n)
        rates = {}
        for charging in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                rates["SQLite", charging] = ledger_commands(f"sqlite:///{tmp}/bench.db", n, charging)
            rates["PostgreSQL", charging] = ledger_commands(f"{pg}?schema={schema}_{int(charging)}", n, charging)
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            for name in (schema, f"{schema}_0", f"{schema}_1"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    print(f"n = {n} per run")
    print(f"baseline  raw psycopg single-row insert transactions:   {baseline:9.0f}/s  ratio 1.00")
    for db in ("SQLite", "PostgreSQL"):
        plain, paid = rates[db, False], rates[db, True]
        print(f"ledger    set-members (no money) on {db:<10}:          {plain:9.0f}/s  ratio {plain / baseline:.2f}")
        print(f"ledger    buy-ai-credits (two-step charge) on {db:<10}: {paid:9.0f}/s  ratio {paid / baseline:.2f}"
              f"  ({paid / plain:.2f} of set-members)")


if __name__ == "__main__":
    main()
