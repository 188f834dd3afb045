"""Database set-up: the event store's and the read models' tables are made once per database
version, under a lock, never by every process that starts.

Two parts are versioned apart in `subledger_meta`: the event store (what a Ledger needs) and
the read models (what reads and catch-up need), so a process that only records events never
makes read-model tables. A process first reads the versions of the parts it needs. When they
are current nothing is created (the library is told CREATE_TABLE=n), so processes starting
together run no DDL at all. When not, it takes the set-up lock (PostgreSQL: an advisory lock
keyed on the schema; SQLite: an flock on `<file>-lock`), looks again, creates what is missing
and records the versions. A first set-up that fails drops the schema it made, so a bad URL
leaves nothing behind. The same lock keeps two read-model rebuilds from running at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any


from adapters import failures
from adapters.settings import READ_ONLY
from domain.errors import LedgerError
from projections.families import VERSIONS

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 8
"""Bump when the event store's own tables or functions change, or its snapshots must go (3: the
save function, adapters/chained_postgres_sql.py; 5: snapshots taken before it are discarded,
`_create`; 6: each snapshot's digest, adapters/snapshots.py; 7: a waiting charge counts the
operations reported meanwhile; 8: a free plan's reactivation anchors no period);
read-model versions are part of `version()`."""
DISCARD_SNAPSHOTS_BEFORE = 8
"""Snapshots taken before this event store version are deleted by the upgrade. Before 5 they
hold idempotency keys without the instant each was first used, which the upcaster
(Subscription.upcast_v4_v5) can only guess; before 6 they have no digest, and a load ignores a
snapshot without one (adapters/snapshots.py); before 7 a charge waiting in one does not count the
operations reported while it waited (domain/subscription/operations_pools.py), which no upcaster
can recount without the events; before 8 one taken after a free-plan workspace's reactivation
holds the period it anchored (domain/subscription/events.py WorkspaceReactivated), forever due.
Snapshots are a cache of the events: each
workspace's next load replays its events and snapshots it again."""
META = "subledger_meta"
SET_UP_WAIT = 120.0  # ok-float: seconds a process waits for another one's set-up

_last_env: dict[str, str] = {}
"""The database this process prepared last: errors raised later name it."""


@cache
def versions() -> dict[str, str]:
    """The version each part of the schema must have, by its key in subledger_meta."""
    return {"event_store": f"subledger-{SCHEMA_VERSION} eventsourcing-{metadata.version('eventsourcing')}",
            "read_models": " ".join(f"{family}-v{version}" for family, version in VERSIONS.items())}


def last_env() -> dict[str, str]:
    return dict(_last_env)


def forget() -> None:
    """A new invocation: errors name no database until it prepares one."""
    _last_env.clear()


def prepare(env: Mapping[str, str], *, read_models: bool = False) -> dict[str, str]:
    """Check the database answers and its event store (and read models) are set up for this
    version, setting them up if not. Returns the environment to build the Ledger and read
    models with. Raises `unavailable` with a plain-English reason when the database cannot be used."""
    _last_env.clear()
    _last_env.update(env)
    module = env.get("PERSISTENCE_MODULE")
    parts = ["event_store", "read_models"] if read_models else ["event_store"]
    try:
        if module == "eventsourcing.postgres":
            _prepare_postgres(env, parts)
        elif module == "eventsourcing.sqlite" and "mode=memory" not in env["SQLITE_DBNAME"]:
            _prepare_sqlite(env, parts)
        else:  # one in-memory database per process: nothing to share, the library creates
            return dict(env)
    except LedgerError:
        raise
    except Exception as e:
        explained = failures.explain(e, env)
        if explained is None:
            raise
        raise explained from e
    return {**env, "CREATE_TABLE": "n"}


def _create(env: Mapping[str, str], parts: list[str], found: Mapping[str, str]) -> None:
    """Let the library and the read models create their tables (all "if missing"); discard the
    snapshots of an event store older than DISCARD_SNAPSHOTS_BEFORE or of no recorded version
    (`found`: the versions recorded)."""
    from adapters.snapshots import discard_snapshots
    from domain.ledger import Ledger
    from projections.runner import Projections

    full = {**env, "CREATE_TABLE": "y"}
    ledger = Ledger(full)
    try:
        recorded = recorded_version(found)
        if "event_store" in parts and not (recorded and recorded >= DISCARD_SNAPSHOTS_BEFORE):
            discard_snapshots(ledger)  # also a store older than the versions table (a new one has none)
        if "event_store" in parts and recorded and recorded != SCHEMA_VERSION and ledger.due_index:
            # another version wrote here last (an upgrade, or an older process after one): it may
            # have saved without the due index, so the next advance indexes every workspace again
            ledger.recorder.forget_due_index()
        if "event_store" in parts and ledger.payments_log.get_last() is None:
            used = _gateway_used(env)
            if used is not None:  # a store charged before the gateway was recorded: not its next writer's
                ledger.save(ledger.payments_log.trigger_event(gateway=used))
        if "read_models" in parts:
            with Projections(full, source=ledger):
                pass
    finally:
        ledger.close()


def _gateway_used(env: Mapping[str, str]) -> str | None:
    """The gateway an existing store's charges went through, read from the gateways' own tables:
    Stripe's customers or payment methods (real money) first, then the test gateway's charges."""
    from sqlalchemy import create_engine, inspect, text

    from projections.store import sqlalchemy_url
    engine = create_engine(sqlalchemy_url(env))
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            for table, kind in (("stripe_customers", "stripe"), ("stripe_payment_methods", "stripe"),
                                ("test_gateway_charges", "test")):
                if table in names and conn.execute(text(f'SELECT 1 FROM "{table}" LIMIT 1')).first() is not None:
                    return kind
    finally:
        engine.dispose()
    return None


# ------------------------------------------------------------------ PostgreSQL


def connect(env: Mapping[str, str]) -> psycopg.Connection[Any]:
    import psycopg
    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env.get("POSTGRES_PASSWORD") or None,
        connect_timeout=int(env.get("POSTGRES_CONNECT_TIMEOUT") or 5), autocommit=True,
    )


def _prepare_postgres(env: Mapping[str, str], parts: list[str]) -> None:
    import psycopg
    from psycopg import sql
    schema = env["POSTGRES_SCHEMA"]
    with connect(env) as conn:
        if not _pg_missing(conn, schema, parts):
            return
        with _advisory_lock(conn, schema, wait=SET_UP_WAIT):
            missing = _pg_missing(conn, schema, parts)
            if not missing:
                return
            existed = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None
            try:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                _create(env, missing, _pg_found(conn, schema))
                meta = sql.Identifier(schema, META)
                conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value text NOT NULL)")
                             .format(meta))
                for part in missing:
                    conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (key) "
                                         "DO UPDATE SET value = excluded.value").format(meta), [part, versions()[part]])
            except BaseException:
                if not existed:
                    with suppress(psycopg.Error):
                        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
                raise


def _pg_missing(conn: psycopg.Connection[Any], schema: str, parts: list[str]) -> list[str]:
    return _missing(_pg_found(conn, schema), parts)


def recorded_version(found: Mapping[str, str]) -> int | None:
    """The event store version a store records (`found`: its subledger_meta), None before any."""
    recorded = re.match(r"subledger-(\d+) ", found.get("event_store", ""))
    return int(recorded.group(1)) if recorded else None


def _missing(found: Mapping[str, str], parts: list[str]) -> list[str]:
    """The parts whose recorded version is not this code's. A store a newer release set up is
    refused: this one would set it up again for itself, record its own older version, and write
    what the newer one's readers do not expect (or, as an older release did, save without the
    due index, so that renewals were missed)."""
    recorded = recorded_version(found)
    if recorded and recorded > SCHEMA_VERSION:
        raise LedgerError("unavailable", f"this ledger was set up by a newer subledger (event store version "
                          f"{recorded}; this one is {SCHEMA_VERSION}): run the newer version")
    return [part for part in parts if found.get(part) != versions()[part]]


def _pg_found(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The versions recorded in the schema (none before its first set-up)."""
    from psycopg import sql
    if conn.execute("SELECT to_regclass(%s)", [f"{schema}.{META}"]).fetchone() == (None,):
        return {}
    return dict(conn.execute(sql.SQL("SELECT key, value FROM {}").format(sql.Identifier(schema, META))).fetchall())


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"subledger set-up {schema}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def _advisory_lock(conn: psycopg.Connection[Any], schema: str, wait: float | None,  # ok-float: seconds
                   on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """A session-level advisory lock: released at the end, or when the process dies."""
    import psycopg
    from psycopg import sql
    key = _lock_key(schema)
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:  # type: ignore[index]
        if on_wait:
            on_wait()
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(wait * 1000)}ms" if wait else "0")))
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        with suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])


# ------------------------------------------------------------------ SQLite


def _prepare_sqlite(env: Mapping[str, str], parts: list[str]) -> None:
    if not _sqlite_missing(env, parts):
        return
    if env.get(READ_ONLY):
        raise LedgerError("unavailable", f"{failures.where(env)}: the file is read-only and not set up for this "
                          "version of subledger; open it once with write access")
    with _file_lock(env, wait=SET_UP_WAIT):
        missing = _sqlite_missing(env, parts)
        if not missing:
            return
        _create(env, missing, _sqlite_found(env))
        with sqlite_connect(env) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.executemany(f"INSERT OR REPLACE INTO {META} VALUES (?, ?)", [(p, versions()[p]) for p in missing])
        conn.close()


def sqlite_connect(env: Mapping[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(env["SQLITE_DBNAME"], uri=True, timeout=float(env.get("SQLITE_LOCK_TIMEOUT") or 10))


def _sqlite_missing(env: Mapping[str, str], parts: list[str]) -> list[str]:
    return _missing(_sqlite_found(env), parts)


def _sqlite_found(env: Mapping[str, str]) -> dict[str, str]:
    conn = sqlite_connect(env)
    try:
        return dict(conn.execute(f"SELECT key, value FROM {META}").fetchall())
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
    finally:
        conn.close()


@contextmanager
def _file_lock(env: Mapping[str, str], wait: float | None,  # ok-float: seconds
               on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive flock on `<file>-lock` (never on the database file itself: closing another
    descriptor of it would drop SQLite's own locks)."""
    fd = os.open(env["SQLITE_DBNAME"] + "-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait and not announced:
                    on_wait()
                    announced = True
                if deadline is not None and time.monotonic() > deadline:
                    raise LedgerError("unavailable", f"{failures.where(env)}: another process has held the set-up "
                                      f"lock for {wait:.0f} s; try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------ rebuilds


@contextmanager
def schema_lock(env: Mapping[str, str], on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the set-up lock while changing tables (a read-model rebuild): a second process
    calls `on_wait` and waits for the first to finish."""
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        with connect(env) as conn, _advisory_lock(conn, env["POSTGRES_SCHEMA"], wait=None, on_wait=on_wait):
            yield
    elif "mode=memory" in env.get("SQLITE_DBNAME", "mode=memory") or env.get(READ_ONLY):
        yield
    else:
        with _file_lock(env, wait=None, on_wait=on_wait):
            yield
