"""A read without the projection machinery, when catching up would project nothing.

`subledger show` reads one plan_state row after catching the read models up. Catching up needs
the Ledger, eventsourcing, SQLAlchemy and every read model, which are most of the command's
start-up, yet it has nothing to do once every read model's tracking position has reached the
ledger's last notification. So the database is first asked, with its own driver (sqlite3,
psycopg), whether that is so: set up for this version (adapters/schema.py `prepare`, as the full
path does first), every read model live at this code's version, each position at the head. If
so the row is read at once; if not, the caller takes the full path, which catches up (or builds,
or rebuilds) exactly as before. A read-only SQLite file is read as it stands, as `refresh` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from adapters.schema import connect, prepare, sqlite_connect
from adapters.settings import READ_ONLY
from projections.families import REGISTRY, VERSIONS, tracking_table

APP = "subledger"
"""The ledger's application name: its notifications' name in the tracking tables (domain/ledger.py)."""
PLAN_STATE = "rm_plan_state"
"""The stable view over the live plan_state table (projections/plan_state.py)."""
EVENTS = {"eventsourcing.sqlite": ("stored_events", "rowid"), "eventsourcing.postgres": ("subledger_events",
                                                                                          "notification_id")}
"""The ledger's events table and notification id column, as the library's recorders name them."""

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Current:
    """The workspace's plan-state document (None: no such workspace), read from current read models."""

    state: dict[str, Any] | None


def plan_state(env: Mapping[str, str], workspace: str) -> Current | None:
    """The workspace's plan_state row if the read models are current, else None: catch up first.
    Only for the default payment gateway: another one is checked by the full path (adapters/app.py)."""
    module = env.get("PERSISTENCE_MODULE")
    if os.environ.get("SUBLEDGER_PAYMENTS", "test") != "test" or module not in EVENTS \
            or "mode=memory" in env.get("SQLITE_DBNAME", ""):
        return None
    env = prepare(env, read_models=True)
    if module == "eventsourcing.sqlite":
        import sqlite3

        try:
            with closing(sqlite_connect(env)) as conn:
                return _read(lambda sql, args: conn.execute(sql, args).fetchall(), "?", "", env, workspace)
        except sqlite3.Error:  # the full path says what is wrong
            return None
    import psycopg

    try:
        with connect(env) as pg:
            return _read(lambda sql, args: pg.execute(sql, args).fetchall(), "%s", f'"{env["POSTGRES_SCHEMA"]}".',
                         env, workspace)
    except psycopg.Error:
        return None

def _read(query: Query, mark: str, schema: str, env: Mapping[str, str], workspace: str) -> Current | None:
    """`mark`: the driver's parameter marker; `schema`: the qualifier of every table name."""
    events, notification_id = EVENTS[env["PERSISTENCE_MODULE"]]
    head = query(f'SELECT MAX({notification_id}) FROM {schema}"{events}"', ())[0][0] or 0
    live = {family: (version, tag) for family, version, tag in
            query(f'SELECT projection, version, tag FROM {schema}"{REGISTRY}"', ())}
    if any(live.get(family, (None, ""))[0] != version for family, version in VERSIONS.items()):
        return None
    if not env.get(READ_ONLY):
        for family in VERSIONS:
            table = tracking_table(family, live[family][1])
            position = query(f'SELECT MAX(notification_id) FROM {schema}"{table}" WHERE application_name = {mark}',
                             (APP,))[0][0] or 0
            if position < head:
                return None
    found = query(f'SELECT state FROM {schema}"{PLAN_STATE}" WHERE workspace = {mark}', (workspace,))
    return Current(json.loads(found[0][0]) if found else None)

