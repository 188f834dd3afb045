"""What the benchmarks share: the PostgreSQL database they run in, and events made quickly.

Standard library only at import: each benchmark imports this before it takes its own folder off
sys.path (bench/projections.py would shadow the `projections` package), and only then imports
the project.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def postgres_base(explicit: str | None) -> str:
    """--db, else $SUBLEDGER_DB when it is a PostgreSQL URL, else the local server named by the
    libpq variables (PGUSER, PGHOST, PGPORT, PGDATABASE; default the `test` database). Without
    a schema: each benchmark works in a schema of its own and drops it."""
    env_db = os.environ.get("SUBLEDGER_DB", "")
    url = explicit or (env_db if env_db.startswith("postgres") else "")
    if not url:
        env = os.environ
        url = (f"postgresql://{env.get('PGUSER', 'postgres')}@{env.get('PGHOST', '127.0.0.1')}:"
               f"{env.get('PGPORT', '5432')}/{env.get('PGDATABASE', 'test')}")
    return url.split("?")[0]


def generate(url: str, target: int, steps: tuple[tuple[str, dict[str, Any]], ...]) -> int:
    """Record about `target` events: each new workspace of the `workspace` catalog runs `steps`,
    every charge succeeding, then renews monthly for two years, all saved in one transaction
    (the aggregate run directly, bypassing per-command transactions). Returns the log's head."""
    from adapters.app import build_ledger
    from domain.commands import Actor, parse_command
    from domain.ledger import TestClock
    from domain.payments import ChargeResult

    admin = Actor(id="bench", role="admin")
    ledger = build_ledger(url, catalog="workspace", clock=TestClock(START))
    end = START + timedelta(days=365 * 2)
    i = 0
    while (ledger.recorder.max_notification_id() or 0) < target:
        sub = ledger._new(f"ws{i}", admin, "api")  # noqa: SLF001
        i += 1
        for name, args in steps:
            ctx = ledger._context(sub, admin, "api", name, None, None, None, None)  # noqa: SLF001
            sub.record(sub.decide(parse_command(name, args), ctx), ctx)
            for invoice_id in list(sub.pending_charges):
                sub.settle(invoice_id, ChargeResult("succeeded", charge_id="ch_bench"), ctx)
        ctx = ledger._context(sub, admin, "api", "advance", None, None, None, None)  # noqa: SLF001
        sub.process_due(ctx.system(end, "advance"), forecast=True)
        ledger._save(sub, list(sub.pending_events))  # noqa: SLF001
    head = ledger.recorder.max_notification_id() or 0
    ledger.close()
    return head
