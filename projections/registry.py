"""Which table set of each read model is live, and the swap that changes it.

A read model's rows live in versioned tables (rm_plan_state_v1; a rebuild of the same
version gets rm_plan_state_v1_2, ...). Downstream services read the stable views
(rm_plan_state, ...), which `activate` re-points in one transaction, recording the
choice in rm_registry. A schema change is a new version rebuilt by replay, never a
hand migration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from projections.families import REGISTRY as REGISTRY_TABLE, tracking_table
from projections.readmodel import ReadModel
from projections.store import LOCK_KEY, UtcDateTime

REGISTRY = Table(
    REGISTRY_TABLE, MetaData(),
    Column("projection", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("tag", String(32), nullable=False),
    Column("activated_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True)
class Active:
    projection: str
    version: int
    tag: str
    activated_at: datetime


def ensure_registry(engine: Engine) -> None:
    REGISTRY.create(engine, checkfirst=True)


def active(conn: Connection) -> dict[str, Active]:
    return {r.projection: Active(r.projection, r.version, r.tag, r.activated_at) for r in conn.execute(select(REGISTRY))}


def parse_tag(tag: str) -> tuple[int, int]:
    """'v1' -> (1, 1); 'v1_3' -> (1, 3): version and build."""
    version, _, build = tag[1:].partition("_")
    return int(version), int(build or 1)


def next_tag(model: type[ReadModel], current: Active | None) -> str:
    """A fresh table set for the model's code version: v<version>, or v<version>_<build>
    when that version is already live (a rebuild of the same shape)."""
    build = 1
    if current is not None:
        version, current_build = parse_tag(current.tag)
        if version == model.version:
            build = current_build + 1
    return f"v{model.version}" if build == 1 else f"v{model.version}_{build}"


def physical_tables(model: type[ReadModel], tag: str) -> list[str]:
    return [model.table_name(t, tag) for t in model.tables] + [tracking_table(model.family, tag)]


def drop_tables(conn: Connection, model: type[ReadModel], tag: str) -> None:
    """On PostgreSQL under the projector's own lock (projections/store.py, lock_position): a batch
    still writing to these tables reads their tracking row first, then writes the rows, and a
    drop taking them in another order deadlocked with it; it now waits for that batch to end."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"), {"name": tracking_table(model.family, tag)})
    for name in physical_tables(model, tag):
        conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))


def activate(engine: Engine, model: type[ReadModel], tag: str) -> str | None:
    """Point the model's stable views at its `tag` tables and record it; then, in a transaction of
    its own (a projector still writing to them must not hold the swap up), drop the tables that
    were live before, and any older set left by a swap whose process died before its drop.
    Returns the previous tag."""
    with engine.begin() as conn:
        previous = active(conn).get(model.family)
        for table in model.tables:
            stable = model.table_name(table, "")
            conn.execute(text(f'DROP VIEW IF EXISTS "{stable}"'))
            conn.execute(text(f'CREATE VIEW "{stable}" AS SELECT * FROM "{model.table_name(table, tag)}"'))
        model.on_activate(conn, tag)
        conn.execute(delete(REGISTRY).where(REGISTRY.c.projection == model.family))
        conn.execute(insert(REGISTRY).values(projection=model.family, version=model.version, tag=tag,
                                             activated_at=datetime.now(timezone.utc)))
    with engine.begin() as conn:  # the old tables, and any older set a swap left when its process died
        gone = {previous.tag} if previous is not None and previous.tag != tag else set()
        for old in gone | stale_tags(inspect(conn).get_table_names(), model, tag):
            drop_tables(conn, model, old)
    return previous.tag if gone and previous is not None else None


TAG = r"v\d+(?:_\d+)?"


def stale_tags(names: Iterable[str], model: type[ReadModel], live: str) -> set[str]:
    """The tags of the model's table sets among `names` older than the live one. A newer one is
    a rebuild under way (or interrupted, to be resumed), never stale."""
    patterns = [re.compile(rf"rm_{re.escape(t)}_({TAG})") for t in model.tables]
    patterns.append(re.compile(rf"rm_{re.escape(model.family)}_({TAG})_tracking"))
    found = {m.group(1) for name in names for p in patterns if (m := p.fullmatch(name))}
    return {tag for tag in found if parse_tag(tag) < parse_tag(live)}
