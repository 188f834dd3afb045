"""Commands per second through the Ledger, on SQLite and PostgreSQL, beside a baseline
measured in the same run: raw psycopg single-row INSERT transactions. Prints ratios.

    .venv/bin/python bench/commands.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

# bench/projections.py would shadow the `projections` package when this runs as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402
from domain.ledger import TestClock  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = Actor(id="bench", role="admin")


def raw_psycopg_inserts(n: int) -> float:
    """Single-row INSERT transactions per second over one psycopg connection."""
    table = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial primary key, ws text, body jsonb)")
        try:
            start = time.perf_counter()
            for i in range(n):
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} (ws, body) VALUES (%s, %s)", (f"ws{i % 10}", '{"members": 1}'))
            return n / (time.perf_counter() - start)
        finally:
            conn.execute(f"DROP TABLE {table}")


def ledger_commands(url: str, n: int) -> float:
    """Commands per second: set-members on ten workspaces on a paid plan, each one load,
    decide and save (one transaction)."""
    clock = TestClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    ledger = build_ledger(url, catalog="forms", clock=clock)
    workspaces = [f"ws{i}" for i in range(10)]
    for ws in workspaces:
        ledger.handle(ws, parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), ADMIN)
        ledger.handle(ws, parse_command("subscribe", {"plan": "pro", "interval": "month"}), ADMIN)
    start = time.perf_counter()
    for i in range(n):
        result = ledger.handle(workspaces[i % 10], parse_command("set-members", {"members": i % 3}), ADMIN)
        assert result.ok, result.error
    rate = n / (time.perf_counter() - start)
    ledger.close()
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    baseline = raw_psycopg_inserts(n)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = ledger_commands(f"sqlite:///{tmp}/bench.db", n)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        postgres = ledger_commands(f"{PG}?schema={schema}", n)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"n = {n} per run")
    print(f"baseline  raw psycopg single-row insert transactions: {baseline:9.0f}/s  ratio 1.00")
    print(f"ledger    commands on SQLite:                         {sqlite:9.0f}/s  ratio {sqlite / baseline:.2f}")
    print(f"ledger    commands on PostgreSQL:                     {postgres:9.0f}/s  ratio {postgres / baseline:.2f}")


if __name__ == "__main__":
    main()
