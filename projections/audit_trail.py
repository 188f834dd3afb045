"""audit_trail: one row per event, chained per workspace so tampering shows.

Each row carries who, when, through which channel, a human summary, the fields of the
`state` document the event changed (before and after), its money impact, and
hash = sha256(previous row's hash + canonical JSON of the row's content); the first row
of a workspace chains from the empty string. `verify` recomputes every chain and names
the first row that does not match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from functools import singledispatch
from typing import IO, Any

import orjson
from eventsourcing.persistence import Tracking
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from domain.subscription import Subscription
from projections.audit_summary import Scene, summary
from projections.readmodel import ReadModel
from projections.store import Amount, UtcDateTime, canonical_amount, dumps, insert_rows, iso

CONTENT = ("position", "workspace", "version", "occurred_at", "actor_id", "actor_role", "channel", "cause",
           "reason", "idempotency_key", "event_type", "summary", "before", "after", "money_impact", "currency",
           "catalog_version")


class AuditTrail(ReadModel):
    """v2: a charge abandoned at 3-D Secure reads "canceled", no longer "declined (canceled)".
    v3: every event has a sentence (a payment method, a contract, usage, schedules called off
    read as their type's name), and a collection's charge says why, not "for renewal"."""

    family = "audit_trail"
    version = 3
    tables = ("audit_trail",)

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {"audit_trail": Table(
            cls.table_name("audit_trail", tag), metadata,
            Column("position", Integer, primary_key=True),
            Column("workspace", String(64), nullable=False, index=True),
            Column("version", Integer, nullable=False),
            Column("occurred_at", UtcDateTime, nullable=False, index=True),
            Column("actor_id", String(96), nullable=False),
            Column("actor_role", String(32), nullable=False),
            Column("channel", String(32), nullable=False),
            Column("cause", String(64), nullable=False),
            Column("reason", Text),
            Column("idempotency_key", String(128)),
            Column("event_type", String(64), nullable=False),
            Column("summary", Text, nullable=False),
            Column("before", Text, nullable=False),
            Column("after", Text, nullable=False),
            Column("money_impact", Amount),
            Column("currency", String(3), nullable=False),
            Column("catalog_version", String(64)),
            Column("prev_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
        )}

    KEEP = 5000
    """Workspaces whose chain head stays cached between batches (while no other process projects)."""

    def begin(self, session: Session) -> None:
        if not hasattr(self, "heads"):
            self.heads: OrderedDict[str, str] = OrderedDict()
        self.buffer: list[dict[str, Any]] = []

    def finish(self, session: Session) -> None:
        insert_rows(session, self.view.t["audit_trail"], self.buffer)
        while len(self.heads) > self.KEEP:
            self.heads.popitem(last=False)

    def abort(self) -> None:
        self.heads = OrderedDict()

    def note(self, before: Subscription | None, event: Subscription.Event) -> Any:
        """The state document before the event, and the plan's name then."""
        if before is None:
            return {}, None
        from_plan = before.plan_of(self.fold.catalog(before))
        return self.fold.state(before), from_plan.name if from_plan else None

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        (before, from_name), sub = self.current.note, self.current.sub
        catalog = self.fold.catalog(sub)
        after = self.fold.state(sub)
        changed = changed_keys(before, after)
        table = self.view.t["audit_trail"]
        ws = sub.workspace_id
        prev = self.heads.get(ws)
        if prev is None and event.originator_version > 1:
            prev = session.execute(select(table.c.hash).where(table.c.workspace == ws)
                                   .order_by(table.c.position.desc()).limit(1)).scalar_one_or_none()
        prev = prev or ""
        row = {
            "position": tracking.notification_id, "workspace": ws, "version": event.originator_version,
            "occurred_at": event.timestamp, "actor_id": event.actor_id, "actor_role": event.actor_role,
            "channel": event.channel, "cause": event.cause, "reason": event.reason,
            "idempotency_key": event.idempotency_key, "event_type": type(event).__name__,
            "summary": summary(event, Scene(sub, catalog, from_name, self.fold.source,
                                                self.fold.seen.get(event.originator_id))),
            "before": dumps({k: before.get(k) for k in changed}), "after": dumps({k: after.get(k) for k in changed}),
            "money_impact": money_impact(event), "currency": catalog.currency,
            "catalog_version": event.catalog_version, "prev_hash": prev,
        }
        row["hash"] = hashlib.sha256((prev + canonical(row)).encode("utf-8")).hexdigest()
        self.heads[ws] = row["hash"]
        self.heads.move_to_end(ws)
        self.buffer.append(row)


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The fields of the state document an event changed, a field either side lacks included."""
    if before.keys() == after.keys():
        return [k for k, v in after.items() if before[k] != v]
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _canonical_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return canonical_amount(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def canonical(row: Mapping[str, Any]) -> str:
    """The row's content as hashed: fixed field set, amounts to six places, instants ISO UTC.

    The row's top-level Decimals and instants are converted by orjson's `default` (its cells
    hold no nested ones), which writes what `_canonical_slow` (the definition) writes."""
    content = {key: row.get(key) for key in CONTENT}
    content["money_impact"] = canonical_amount(content["money_impact"])
    try:
        return orjson.dumps(content, default=_canonical_value, option=_CANONICAL).decode("utf-8")
    except TypeError:
        return _canonical_slow(row)


def _canonical_slow(row: Mapping[str, Any]) -> str:
    content = {}
    for key in CONTENT:
        value = row.get(key)
        if isinstance(value, Decimal) or key == "money_impact":
            value = canonical_amount(value)
        elif isinstance(value, datetime):
            value = iso(value)
        content[key] = value
    return dumps(content)


def chain_hash(prev: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((prev + canonical(row)).encode("utf-8")).hexdigest()


@singledispatch
def money_impact(event: Subscription.Event) -> Decimal | None:
    """What the event moves, signed from the customer's side: billed, paid, credited. An event
    class moves money only through a function registered for it
    (`@money_impact.register(Subscription.X)`, inherited by its subclasses); any other is None."""
    return None


@money_impact.register(Subscription.InvoiceIssued)
def _billed(event: Subscription.InvoiceIssued) -> Decimal:
    return event.amount_due


@money_impact.register(Subscription.PaymentSucceeded)
def _paid(event: Subscription.PaymentSucceeded) -> Decimal:
    return event.amount


@money_impact.register(Subscription.BillingCreditIssued)
def _credited(event: Subscription.BillingCreditIssued) -> Decimal:
    return event.amount


@money_impact.register(Subscription.OperationsConvertedToCredit)
def _operations_credited(event: Subscription.OperationsConvertedToCredit) -> Decimal:
    return event.amount


@money_impact.register(Subscription.BillingCreditApplied)
def _credit_spent(event: Subscription.BillingCreditApplied) -> Decimal:
    return -event.amount


def rows(conn: Connection, workspace: str | None = None, since: datetime | None = None,
         until: datetime | None = None, after: int | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Audit rows in position order, filtered by workspace and [since, until), past position
    `after` and at most `limit` of them (a page)."""
    t = AuditTrail.stable()["audit_trail"]
    query = select(t).order_by(t.c.position).limit(limit)
    if after is not None:
        query = query.where(t.c.position > after)
    if workspace:
        query = query.where(t.c.workspace == workspace)
    if since:
        query = query.where(t.c.occurred_at >= since)
    if until:
        query = query.where(t.c.occurred_at < until)
    for row in conn.execute(query).mappings():
        yield dict(row)


def paged(engine: Engine, workspace: str | None, since: datetime | None, until: datetime | None,
          size: int = 1000) -> Iterator[dict[str, Any]]:
    """The same rows, read a page at a time, each on a connection of its own that is returned to
    the pool before a row is handed on: a reader who stops reading an export (HTTP streams it)
    holds no connection the process's other readers need."""
    after = None
    while True:
        with engine.connect() as conn:
            page = list(rows(conn, workspace, since, until, after, size))
        yield from page
        if len(page) < size:
            return
        after = page[-1]["position"]


def exported(row: dict[str, Any]) -> dict[str, Any]:
    """A row as exported: amounts at six places, instants ISO, before/after as objects."""
    out = dict(row)
    out["occurred_at"] = iso(row["occurred_at"])
    out["money_impact"] = canonical_amount(row["money_impact"])
    out["before"], out["after"] = json.loads(row["before"]), json.loads(row["after"])
    return out


def jsonl_lines(found: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The JSON Lines export, a line at a time (the HTTP API streams it)."""
    for row in found:
        yield dumps(exported(row)) + "\n"


FREE_TEXT = ("reason", "summary")
"""Cells a person typed (or that quote what they typed): opened in a spreadsheet, one starting
with =, +, -, @ or a tab would run as a formula, so it is written with a leading apostrophe."""


def spreadsheet_safe(text: Any) -> Any:
    if isinstance(text, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def csv_lines(found: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The CSV export: the header, then a row at a time; before/after as their stored JSON, and
    free text made safe to open in a spreadsheet (the JSON Lines export keeps it verbatim)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CONTENT, "prev_hash", "hash"])
    writer.writeheader()
    yield buffer.getvalue()
    for row in found:
        buffer.seek(0)
        buffer.truncate()
        doc = exported(row)
        doc["before"], doc["after"] = row["before"], row["after"]
        for name in FREE_TEXT:
            doc[name] = spreadsheet_safe(doc[name])
        writer.writerow(doc)
        yield buffer.getvalue()


def write_jsonl(out: IO[str], found: Iterator[dict[str, Any]]) -> int:
    n = 0
    for line in jsonl_lines(found):
        out.write(line)
        n += 1
    return n


def write_csv(out: IO[str], found: Iterator[dict[str, Any]]) -> int:
    n = -1  # the header is not a row
    for chunk in csv_lines(found):
        out.write(chunk)
        n += 1
    return n


def verify(conn: Connection, workspace: str | None = None) -> dict[str, Any]:
    """Recompute every workspace's chain: {'ok': True, 'rows', 'workspaces'}, or at the first bad
    row {'ok': False, 'position', 'workspace', 'version', 'event_type', 'problem', 'rows_checked'}."""
    heads: dict[str, str] = {}
    n = 0
    t = AuditTrail.stable()["audit_trail"]
    query = select(t).order_by(t.c.workspace, t.c.position)
    if workspace:
        query = query.where(t.c.workspace == workspace)
    for row in conn.execute(query).mappings():
        n += 1
        ws = row["workspace"]
        expected_prev = heads.get(ws, "")
        problem = None
        if row["prev_hash"] != expected_prev:
            problem = "prev_hash does not match the previous row's hash (row removed, inserted or reordered)"
        elif chain_hash(expected_prev, dict(row)) != row["hash"]:
            problem = "content does not match its hash (row edited)"
        if problem:
            return {"ok": False, "position": row["position"], "workspace": ws, "version": row["version"],
                    "event_type": row["event_type"], "problem": problem, "rows_checked": n}
        heads[ws] = row["hash"]
    return {"ok": True, "rows": n, "workspaces": len(heads)}
