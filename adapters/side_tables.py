"""Tables kept beside the events, in the ledger's own database (same SQLite file, same
PostgreSQL schema): the test gateway's charges, API tokens, HTTP idempotency records, webhook
subscriptions. One engine per store, made on first use, its tables (and their indexes) created
once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, MetaData, create_engine, delete, inspect, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from adapters.settings import eventsourcing_env
from projections.store import sqlalchemy_url

T = TypeVar("T")
CREATE_LOCK = 0x7465737467617465  # pg_advisory_xact_lock key: "testgate"
PURGE_BATCH = 20
"""Rows one insert purges at most: more than one, so a backlog (a server stopped for a day)
drains while the table takes new rows, and few enough to keep the insert quick."""


def _add_missing_columns(conn: Connection, table: Any) -> None:
    """A column added to a side table since the database was set up (always nullable, so the
    rows already there stay valid) is added to it: the tables have no migrations beyond that."""
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    quote = conn.dialect.identifier_preparer
    for column in table.columns:
        if column.name not in present:
            if not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name}: a column added later must be nullable")
            try:
                conn.execute(text(f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {quote.format_column(column)} "
                                  f"{column.type.compile(dialect=conn.dialect)}"))
            except OperationalError as e:  # SQLite: another process added it first (PostgreSQL holds a lock)
                if "duplicate column" not in str(e):
                    raise


class SideTables:
    """The tables of `metadata` in the database of `db_url`. `run(work)` is one transaction;
    an unreachable database raises sqlalchemy's OperationalError for the caller to name."""

    def __init__(self, db_url: str, metadata: MetaData) -> None:
        env = eventsourcing_env(db_url)
        self.url = sqlalchemy_url(env)
        self.schema = env.get("POSTGRES_SCHEMA")
        self.metadata = metadata
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], T]) -> T:
        with self.engine().begin() as conn:
            return work(conn)

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                sqlite_db = self.url.startswith("sqlite")
                engine = create_engine(self.url, pool_pre_ping=not sqlite_db, pool_size=2, max_overflow=6,
                                       connect_args={"timeout": 10} if sqlite_db else {"connect_timeout": 5})
                try:
                    self._create_tables(engine)
                except Exception:
                    engine.dispose()
                    raise
                self._engine = engine
            return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _create_tables(self, engine: Engine) -> None:
        """Idempotent and safe when processes start together: PostgreSQL's IF NOT EXISTS can
        still collide on pg_type, so creators take an advisory lock and retry a lost race."""
        for attempt in range(3):
            try:
                with engine.begin() as conn:
                    if engine.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK})
                        if self.schema and self.schema != "public":
                            schema = conn.dialect.identifier_preparer.quote(self.schema)
                            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
                    for table in self.metadata.sorted_tables:
                        conn.execute(CreateTable(table, if_not_exists=True))
                        _add_missing_columns(conn, table)
                        for index in sorted(table.indexes, key=lambda i: i.name or ""):
                            conn.execute(CreateIndex(index, if_not_exists=True))
                return
            except (IntegrityError, ProgrammingError):
                if attempt == 2:
                    raise


def purge_oldest(conn: Connection, table: Any, column: Any, before: datetime, limit: int = PURGE_BATCH) -> None:
    """Delete up to `limit` rows whose `column` (indexed) is before `before`, oldest first: a
    bounded DELETE run in the transaction of an insert, so the table is purged at the rate it
    grows without a job of its own. On PostgreSQL rows another purge holds are skipped, so two
    purges never wait on each other."""
    key = tuple_(*table.primary_key.columns)
    oldest = select(*table.primary_key.columns).where(column < before).order_by(column).limit(limit)
    if conn.dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    conn.execute(delete(table).where(key.in_(oldest)))


def insert_if_absent(conn: Connection, table: Any, row: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).values(**row).on_conflict_do_nothing()
