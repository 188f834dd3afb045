"""The event feed's rate: events per second published to NATS JetStream (read, decode, JSON,
publish pipelined with dedupe and sequence guard, ack, record the position) beside a
baseline measured in the same run on the same events: the raw
`ledger.recorder.select_notifications` read in batches of the same size. Prints both, their
ratio, and two partial steps (read + decode + JSON without NATS; raw JetStream publish of
the same bodies, pipelined the same way, without the database) to show where the time goes.

    .venv/bin/python bench/feed.py [EVENTS] [--db postgresql://user@host:port/db] [--batch 500]

The PostgreSQL database comes from --db, else $SUBLEDGER_DB if it is a PostgreSQL URL, else
the local server's `test` database; the benchmark works in a schema of its own and a stream
of its own (NATS at 127.0.0.1:4222, or $SUBLEDGER_NATS_URL), both dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

# bench/projections.py would shadow the `projections` package when this runs as a script.
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import nats  # noqa: E402
import psycopg  # noqa: E402
from nats.js.api import StreamConfig  # noqa: E402

from adapters.feed import NATS_URL, Publisher  # noqa: E402
from adapters.settings import eventsourcing_env  # noqa: E402

STEPS = (("add-payment-method", {"payment_method": "pm_card_visa"}),
         ("subscribe", {"plan": "team", "interval": "month", "seats": 3}))


def raw_read(publisher: Publisher, batch: int) -> float:
    """Seconds to read every notification with the recorder, in batches."""
    start, position = time.perf_counter(), 0
    while notifications := publisher.source.recorder.select_notifications(start=position + 1, limit=batch):
        position = notifications[-1].id
    return time.perf_counter() - start


def read_and_encode(publisher: Publisher, batch: int) -> tuple[float, list[tuple[int, str, bytes]]]:
    """Seconds to read, decode and render every event as the feed does, without NATS."""
    start, position, out = time.perf_counter(), 0, []
    while notifications := publisher.source.recorder.select_notifications(start=position + 1, limit=batch):
        out.extend(publisher.encode(n) for n in notifications)
        position = notifications[-1].id
    return time.perf_counter() - start, out


async def raw_publish(encoded: list[tuple[int, str, bytes]], stream: str, prefix: str, batch: int) -> float:
    """Seconds to publish the same bodies to a stream of their own, pipelined per batch, no database."""
    nc = await nats.connect(os.environ.get("SUBLEDGER_NATS_URL", NATS_URL))
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}_raw.>"]))
    encoded = [(nid, f"{prefix}_raw{subject[len(prefix):]}", body) for nid, subject, body in encoded]
    try:
        start = time.perf_counter()
        for i in range(0, len(encoded), batch):
            acks = [await js.publish_async(subject, body, headers={"Nats-Msg-Id": str(nid)})
                    for nid, subject, body in encoded[i:i + batch]]
            await asyncio.gather(*acks)
        return time.perf_counter() - start
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def run(url: str, batch: int, tag: str) -> dict[str, float]:
    stream, prefix = f"BENCH_FEED_{tag}", f"bench.{tag}"
    async with Publisher(eventsourcing_env(url), stream=stream, subject_prefix=prefix, batch=batch,
                         nats_url=os.environ.get("SUBLEDGER_NATS_URL", NATS_URL)) as publisher:
        try:
            timings = {"raw read": raw_read(publisher, batch)}
            timings["read + decode + JSON"], encoded = read_and_encode(publisher, batch)
            timings["raw JetStream publish"] = await raw_publish(encoded, f"{stream}_RAW", prefix, batch)
            start = time.perf_counter()
            await publisher.publish_pending()
            timings["feed publish"] = time.perf_counter() - start
            assert publisher.status()["lag"] == 0 and publisher.published == len(encoded)
            timings["raw read again"] = raw_read(publisher, batch)
        finally:
            await publisher.js.delete_stream(stream)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description="Feed events/s as a ratio of the raw notification read.")
    parser.add_argument("events", nargs="?", type=int, default=20_000)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB or the local test db)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_{tag}"
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"({os.cpu_count()} cores)")
    try:
        t0 = time.perf_counter()
        events = benchlib.generate(f"{pg}?schema={schema}", args.events, STEPS)
        print(f"generated {events} events in {time.perf_counter() - t0:.1f}s")
        timings = asyncio.run(run(f"{pg}?schema={schema}", args.batch, tag))
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    raw = min(timings.pop("raw read"), timings.pop("raw read again"))
    print(f"{events} events, batches of {args.batch}, PostgreSQL + NATS JetStream on this machine:")
    print(f"  raw select_notifications read  {events / raw:10.0f} events/s  ratio 1.000")
    for name, seconds in timings.items():
        print(f"  {name:30} {events / seconds:10.0f} events/s  ratio {raw / seconds:.3f}")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
