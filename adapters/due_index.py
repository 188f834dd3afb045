"""The due index: each workspace's next due instant, written by the event recorder in the
transaction that saves the workspace's events, so `advance` reads only the workspaces with
something due (O(due), not O(workspaces)) and never misses one.

The Ledger passes `due={aggregate id: (workspace id, version, instant or None)}` to `save`; the
recorder upserts a row per aggregate, keeping the row of the highest version (a backfill that
read an older version never overwrites a newer writer's row). A ledger recorded before the
index existed has no rows: the Ledger backfills them once (`Ledger.advance`), then marks the
index complete in the chain's meta table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from psycopg.sql import Composed, Identifier

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MARKER = "due_index"
Due = Mapping[Any, tuple[str, int, datetime | None]]


def micros(at: datetime | None) -> int | None:
    return None if at is None else (at - EPOCH) // timedelta(microseconds=1)


def instant(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + timedelta(microseconds=us)


def rows(due: Due) -> list[tuple[UUID, str, int, int | None]]:
    return [(oid if isinstance(oid, UUID) else UUID(str(oid)), ws, version, micros(at))
            for oid, (ws, version, at) in due.items()]


def columns(due: Due) -> list[list[Any]]:
    """The rows as columns, for an `unnest` of arrays (PostgreSQL)."""
    return [list(col) for col in zip(*rows(due), strict=True)]


def sqlite_statements(table: str) -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS {table} (originator_id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, due_us INTEGER)",
            f"CREATE INDEX IF NOT EXISTS {table}_at ON {table} (due_us) WHERE due_us IS NOT NULL"]


def sqlite_upsert(table: str) -> str:
    return (f"INSERT INTO {table} VALUES (?,?,?,?) ON CONFLICT (originator_id) DO UPDATE SET "
            "workspace_id=excluded.workspace_id, version=excluded.version, due_us=excluded.due_us "
            f"WHERE {table}.version < excluded.version")


def postgres_statements(table: Composed, name: str, id_type: Identifier) -> list[Composed]:
    from psycopg.sql import SQL, Identifier

    return [SQL("CREATE TABLE IF NOT EXISTS {} (originator_id {} PRIMARY KEY, workspace_id text NOT NULL, "
                "version bigint NOT NULL, due_us bigint)").format(table, id_type),
            SQL("CREATE INDEX IF NOT EXISTS {} ON {} (due_us) WHERE due_us IS NOT NULL").format(
                Identifier(f"{name}_at"), table)]


def postgres_upsert(table: Composed, id_type: Identifier) -> Composed:
    from psycopg.sql import SQL

    return SQL("INSERT INTO {} AS d SELECT * FROM unnest(%s::{}[], %s::text[], %s::bigint[], %s::bigint[]) "
               "ON CONFLICT (originator_id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, "
               "version = EXCLUDED.version, due_us = EXCLUDED.due_us WHERE d.version < EXCLUDED.version").format(
        table, id_type)
