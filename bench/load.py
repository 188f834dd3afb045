"""Loading a workspace and previewing a change, for a small workspace and one with a long history
(100,000 events, 2,000 invoices), in the same run on PostgreSQL: load time and preview p50/p99,
and the long one's ratio to the small one (bounded state: it should stay near 1).

    .venv/bin/python bench/load.py [--events 100000] [--invoices 2000] [--db URL]

The long history is made by running the aggregate directly (no per-command transaction): AI
credit packs bought (an invoice each, paid), members changed in between, saved in chunks so
the ledger snapshots it as it would (every 50 events, the older snapshots pruned).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import benchlib  # noqa: E402 (stdlib only)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402
from domain.ledger import Ledger, TestClock  # noqa: E402
from domain.payments import ChargeResult  # noqa: E402

ADMIN = Actor(id="bench", role="admin")
SETUP = (("add-payment-method", {"payment_method": "pm_card_visa"}),
         ("subscribe", {"plan": "team", "interval": "month", "seats": 50}))
PREVIEW = parse_command("set-members", {"members": 7})


def run(ledger: Ledger, sub: object, name: str, args: dict[str, object]) -> None:
    ctx = ledger._context(sub, ADMIN, "api", name, None, None, None, None)  # noqa: SLF001
    sub.record(sub.decide(parse_command(name, args), ctx), ctx)  # type: ignore[attr-defined]
    for invoice_id in list(sub.pending_charges):  # type: ignore[attr-defined]
        sub.settle(invoice_id, ChargeResult("succeeded", charge_id="ch_bench"), ctx)  # type: ignore[attr-defined]


def make(ledger: Ledger, ws: str, events: int, invoices: int) -> int:
    """A workspace of about `events` events, `invoices` of them paid invoices; returns its version."""
    sub = ledger._new(ws, ADMIN, "api")  # noqa: SLF001
    for name, args in SETUP:
        run(ledger, sub, name, args)
    per_invoice = max(events // max(invoices, 1), 3)
    bought, members = 0, 0
    while sub.version < events:
        if bought < invoices and sub.version >= bought * per_invoice:
            run(ledger, sub, "buy-ai-credits", {"pack": "ai-1000"})
            bought += 1
        else:
            members = members % 40 + 1
            run(ledger, sub, "set-members", {"members": members})
        if len(sub.pending_events) >= 100:
            ledger._save(sub, list(sub.pending_events))  # noqa: SLF001
    ledger._save(sub, list(sub.pending_events))  # noqa: SLF001
    return sub.version


def timings(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description="Load and preview: a long-history workspace vs a small one.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--invoices", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB if PostgreSQL, else "
                        "the local server's test database); the benchmark uses a schema of its own")
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{pg}?schema={schema}"
    try:
        ledger = build_ledger(url, catalog="workspace", clock=TestClock(benchlib.START))
        t0 = time.perf_counter()
        small = make(ledger, "small", 10, 1)
        big = make(ledger, "big", args.events, args.invoices)
        print(f"made a {small}-event and a {big}-event workspace in {time.perf_counter() - t0:.1f}s")
        with psycopg.connect(pg) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            snaps, size = conn.execute("SELECT count(*), coalesce(sum(length(state)), 0) FROM subledger_snapshots"
                                       ).fetchone() or (0, 0)
        sub = ledger.get("big")
        print(f"big workspace: {len(sub.invoices)} invoices kept in state, {snaps} snapshots stored "
              f"({size / 1024:.0f} KiB)")
        results: dict[str, tuple[list[float], list[float]]] = {"small": ([], []), "big": ([], [])}
        for i in range(args.samples + 10):  # interleaved, so both see the same machine load
            for ws in ("small", "big"):
                load, preview = timings(lambda ws=ws: ledger.get(ws)), timings(lambda ws=ws: ledger.preview(ws, PREVIEW, ADMIN))
                if i >= 10:  # warm-up
                    results[ws][0].append(load)
                    results[ws][1].append(preview)
        results = {ws: (sorted(a), sorted(b)) for ws, (a, b) in results.items()}
        ledger.close()
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    for ws, (load, preview) in results.items():
        print(f"{ws:5}  load p50 {p(load, .5):6.2f} ms  p99 {p(load, .99):6.2f} ms   "
              f"preview p50 {p(preview, .5):6.2f} ms  p99 {p(preview, .99):6.2f} ms  (mean {statistics.mean(preview):.2f})")
    (ls, ps), (lb, pb) = results["small"], results["big"]
    print(f"ratio big/small: load p50 {p(lb, .5) / p(ls, .5):.2f}  preview p50 {p(pb, .5) / p(ps, .5):.2f}  "
          f"preview p99 {p(pb, .99) / p(ps, .99):.2f}")


if __name__ == "__main__":
    main()
