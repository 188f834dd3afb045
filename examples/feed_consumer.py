"""A downstream service built from the subledger feed alone: each workspace's plan and total paid.

It runs as its own process with no access to the ledger's database and imports nothing of
subledger: it reads the JetStream stream that `subledger feed publish` fills (docs/scaling.md)
through a durable pull consumer, and keeps its read model in a SQLite file of its own.

Exactly-once effect, in log order:
- each batch of messages is applied in one SQLite transaction together with the consumer's
  position (the stream sequence and notification id of the last message applied); only
  after the commit are the messages acked;
- a message at or below the position is a redelivery (crash after commit, before ack): acked
  and skipped; a message past position + 1 means one in between has not arrived yet: the
  batch stops there and the rest is redelivered (the feed's stream sequence has no gaps);
- each workspace's versions must follow on (1, 2, 3...): a gap stops the consumer (exit 1).

    python examples/feed_consumer.py --stream SUBLEDGER_TEST --db plans.sqlite [--durable plans]
        [--subject-prefix subledger.test] [--nats nats://127.0.0.1:4222] [--until-caught-up]

    sqlite3 plans.sqlite 'SELECT workspace, plan, paid_total, currency FROM workspaces'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
from decimal import Decimal
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

PLAN_SET = {"Subscribed", "TrialStarted", "TrialConverted", "TrialExpired", "PlanUpgraded", "IntervalChanged",
            "DowngradeApplied"}
"""The events that put a workspace on a plan (field `plan`)."""
PRICED = {"InvoiceIssued", "ChargeRequested"}
"""Events that carry the workspace's currency."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    workspace TEXT PRIMARY KEY, plan TEXT, status TEXT NOT NULL, paid_total TEXT NOT NULL, currency TEXT,
    payments INTEGER NOT NULL, last_version INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1), stream_seq INTEGER NOT NULL, notification_id INTEGER NOT NULL);
"""


class FeedGap(Exception):
    """A workspace's events do not follow on: the stream is not the whole, ordered log."""


class PlansReadModel:
    """The SQLite read model and its position, written together."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA)

    def position(self) -> tuple[int, int]:
        row = self.db.execute("SELECT stream_seq, notification_id FROM position").fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def apply_batch(self, messages: list[tuple[int, dict[str, Any]]]) -> None:
        """Apply (stream sequence, event) pairs that follow the position, and move it, atomically."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for _, event in messages:
                self.apply(event)
            seq, event = messages[-1]
            self.db.execute("INSERT INTO position VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                            "stream_seq = excluded.stream_seq, notification_id = excluded.notification_id",
                            (seq, event["notification_id"]))

    def apply(self, event: dict[str, Any]) -> None:
        ws = event["workspace"]
        if ws is None:
            return  # the ledger's own logs (catalogs, the workspace index)
        row = self.db.execute("SELECT plan, status, paid_total, currency, payments, last_version FROM workspaces "
                              "WHERE workspace = ?", (ws,)).fetchone()
        plan, status, paid, currency, payments, last = row or (None, "none", "0", None, 0, 0)
        if event["version"] != last + 1:
            raise FeedGap(f"workspace {ws}: version {event['version']} after {last} "
                          f"(notification {event['notification_id']})")
        kind, fields = event["type"], event["fields"]
        if kind in PLAN_SET:
            plan, status = fields["plan"], "trialing" if kind == "TrialStarted" else "active"
        elif kind == "SubscriptionCanceled":
            status = "canceled"
        elif kind == "PaymentSucceeded":
            paid, payments = str(Decimal(paid) + Decimal(fields["amount"])), payments + 1
        if kind in PRICED:
            currency = fields["currency"]
        self.db.execute("INSERT OR REPLACE INTO workspaces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (ws, plan, status, paid, currency, payments, event["version"], event["timestamp"]))


async def consume(args: argparse.Namespace, stop: asyncio.Event) -> int:
    model = PlansReadModel(args.db)
    nc = await nats.connect(args.nats, connect_timeout=5)
    js = nc.jetstream()
    subjects = f"{args.subject_prefix}.events.>" if args.subject_prefix else None
    try:
        info = await js.stream_info(args.stream)
    except NotFoundError:
        await nc.close()
        print(f"error: there is no stream {args.stream!r} yet: `subledger feed publish` creates it", file=sys.stderr)
        return 1
    sub = await js.pull_subscribe(
        subjects or info.config.subjects[0], durable=args.durable, stream=args.stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                              max_ack_pending=args.batch * 4))
    applied = 0
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(args.batch, timeout=1)
            except asyncio.TimeoutError:  # nats-py raises its own subclass, or asyncio's itself
                if args.until_caught_up:
                    consumer = await sub.consumer_info()
                    if consumer.num_pending == 0 and consumer.num_ack_pending == 0:
                        break
                continue
            applied += await handle(model, msgs)
    finally:
        await nc.close()
    seq, nid = model.position()
    print(json.dumps({"applied": applied, "stream_seq": seq, "notification_id": nid}))
    return 0


async def handle(model: PlansReadModel, msgs: list[Any]) -> int:
    """Apply what follows the position, commit, then ack; leave the rest to be redelivered."""
    position, _ = model.position()
    todo, done, later = [], [], []
    for msg in msgs:
        seq = msg.metadata.sequence.stream
        if seq <= position:
            done.append(msg)
        elif seq == position + 1 and not later:
            todo.append((seq, json.loads(msg.data)))
            done.append(msg)
            position = seq
        else:
            later.append(msg)
    if todo:
        model.apply_batch(todo)
    for msg in done:
        await msg.ack()
    for msg in later:
        await msg.nak(delay=0.5)
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True, help="The feed's JetStream stream, e.g. SUBLEDGER_TEST.")
    parser.add_argument("--db", required=True, help="This consumer's own SQLite file.")
    parser.add_argument("--durable", default="plans", help="Durable consumer name (the position kept by JetStream).")
    parser.add_argument("--subject-prefix", help="The feed's subject prefix (default: the stream's subjects).")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--until-caught-up", action="store_true", help="Exit once nothing is left to read.")
    args = parser.parse_args(argv)

    async def run() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await consume(args, stop)

    try:
        return asyncio.run(run())
    except FeedGap as e:
        print(f"error: the feed has a gap: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
