"""Where read models live: the events' own database, reached through SQLAlchemy.

The view of every projection is a `SQLAlchemyTrackingRecorder` (eventsourcing-sqlalchemy),
so a view update and its tracking position commit in one transaction. This module maps
the ledger's eventsourcing environment to a SQLAlchemy URL and gives the column types
that keep money exact and instants in UTC on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from operator import itemgetter
from typing import Any, ClassVar
from urllib.parse import quote

import orjson
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyTrackingRecorder
from sqlalchemy import (BigInteger, Column, DateTime, Integer, MetaData, Numeric, String, Table, Text, delete, insert, select, text,
                        update)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

from domain.money import fmt

PERSISTENCE_MODULE = "eventsourcing_sqlalchemy"


def sqlalchemy_url(env: Mapping[str, str]) -> str:
    """The SQLAlchemy URL of the database the ledger's events are in (same file, same schema)."""
    module = env.get("PERSISTENCE_MODULE")
    if module == "eventsourcing.sqlite":
        name = env["SQLITE_DBNAME"]
        if name.startswith("file:"):
            return f"sqlite:///{name}&uri=true" if "?" in name else f"sqlite:///{name}?uri=true"
        return f"sqlite:///{name}"
    if module == "eventsourcing.postgres":
        user = quote(env.get("POSTGRES_USER", "postgres"), safe="")
        password = env.get("POSTGRES_PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}" if password else user
        schema = env.get("POSTGRES_SCHEMA") or "public"
        host, port, db = env.get("POSTGRES_HOST", "127.0.0.1"), env.get("POSTGRES_PORT", "5432"), env["POSTGRES_DBNAME"]
        # search_path puts the read models beside the events, in the same schema.
        return f"postgresql+psycopg://{auth}@{host}:{port}/{db}?options=-csearch_path%3D{quote(schema, safe='')}"
    raise ValueError(f"read models need the sqlite or postgres persistence module, not {module!r}")


def view_env(env: Mapping[str, str], projection_name: str) -> dict[str, str]:
    """The environment a projection's view is built from: the ledger's, plus the view's
    persistence module and URL under the projection's prefix (as ProjectionRunner reads it)."""
    prefix = Environment(projection_name).create_keys("")[0]
    out = dict(env)
    out[prefix + "PERSISTENCE_MODULE"] = PERSISTENCE_MODULE
    out[prefix + "SQLALCHEMY_URL"] = sqlalchemy_url(env)
    return out


def shared_datastore(env: Mapping[str, str]) -> SQLAlchemyDatastore:
    """One SQLAlchemy datastore (engine, connection pool, SQLite write lock) for every read model of
    the ledger database `env` names; its owner disposes of its engine."""
    return SQLAlchemyDatastore(url=sqlalchemy_url(env))


LOCK_KEY = "hashtextextended(current_schema() || '.' || :name, 0)"
"""A PostgreSQL advisory lock's key, named for `:name` in the schema: a read model's is its tracking
table's, which every process that writes its tables (lock_position) or drops them (registry.py)
takes."""


class Amount(TypeDecorator[Decimal]):
    """Exact money: NUMERIC(18, 6) on PostgreSQL; on SQLite, which has no exact decimal
    type (NUMERIC there is a float), the canonical decimal text."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("amounts are Decimals, never floats")
        value = Decimal(value)
        return canonical_amount(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, always returned timezone-aware in UTC (SQLite keeps it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("instants need a timezone")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


LINE_FIELDS = ("kind", "description", "amount", "quantity", "period_start", "period_end", "formula")
"""An invoice line as domain/pricing.py's Line records it."""


def line_columns() -> list[Column[Any]]:
    """The columns of an invoice line, shared by invoice_lines and upcoming_invoice_lines."""
    return [
        Column("kind", String(32), nullable=False),
        Column("description", Text, nullable=False),
        Column("amount", Amount, nullable=False),
        Column("quantity", BigInteger, nullable=False),
        Column("period_start", UtcDateTime),
        Column("period_end", UtcDateTime),
        Column("formula", Text, nullable=False),
    ]


_LINE = itemgetter(*LINE_FIELDS)


def line_row(line: Mapping[str, Any], **keys: Any) -> dict[str, Any]:
    keys.update(zip(LINE_FIELDS, _LINE(line)))
    return keys


def canonical_amount(value: Decimal | None) -> str | None:
    """Six places, fixed point: the same text whichever database it came back from."""
    return None if value is None else format(Decimal(value).quantize(_MICRO), "f")


_MICRO = Decimal("0.000001")


_ISO: dict[datetime, str] = {}
"""Instants already written: a workspace's period bounds recur in every event a projection renders."""


def iso(at: datetime | None) -> str | None:
    """An instant as the JSON contract shows it: ISO-8601 in UTC with `Z`."""
    if not at:
        return None
    if type(at) is datetime and at.tzinfo is timezone.utc:
        found = _ISO.get(at)
        if found is None:
            if len(_ISO) > 4096:
                _ISO.clear()
            found = _ISO[at] = at.isoformat().replace("+00:00", "Z")
        return found
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces): stable for hashing and comparing.

    Written by orjson, whose output for these documents (strings, whole numbers, booleans,
    null, lists and objects with string keys; Decimals and instants through `_default`) is
    byte for byte what `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
    writes, several times faster. What orjson refuses (a non-string key, an integer past 64
    bits, a lone surrogate) goes to the standard library's encoder. Floats, where the two
    could differ, never reach a read model (money is Decimal, counts are ints)."""
    try:
        return orjson.dumps(value, default=_default, option=_ORJSON).decode("utf-8")
    except TypeError:
        return _stdlib_dumps(value)


def _stdlib_dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def document(row: Mapping[str, Any], currency: str | None = None) -> dict[str, Any]:
    """A read-model row as the JSON contract shows it: amounts as strings rounded to the
    currency, instants ISO-8601 UTC, id lists and JSON columns parsed."""
    currency = row.get("currency") or currency
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Decimal) and currency:
            out[key] = fmt(value, currency)
        elif key in ("source_event_ids", "scheduled_change", "addons", "features", "before", "after") \
                and isinstance(value, str):
            out[key] = json.loads(value)
        else:
            out[key] = value
    return json.loads(dumps(out))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write a batch's rows in the session's transaction: COPY on PostgreSQL (an order of
    magnitude fewer round trips and parses than row inserts), a multi-row INSERT elsewhere.
    Each value goes through its column's type first, as an INSERT would bind it."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    from psycopg import sql as psycopg_sql  # PostgreSQL only

    columns = list(table.columns)
    names = [c.name for c in columns]
    bound = [(i, c.type.process_bind_param) for i, c in enumerate(columns) if isinstance(c.type, TypeDecorator)]
    cells = itemgetter(*names) if len(names) > 1 else (lambda r: (r[names[0]],))
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg_sql.Identifier(table.name), psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(n) for n in names))
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for r in rows:
            try:
                values = cells(r)
            except KeyError:
                values = tuple(r.get(n) for n in names)
            for i, bind in bound:
                value = values[i]
                # the common case (an exact Decimal, a UTC datetime, None) binds as itself
                if value is not None and type(value) is not Decimal and \
                        not (type(value) is datetime and value.tzinfo is timezone.utc):
                    values = list(values)
                    values[i] = bind(value, dialect)
            copy.write_row(values)


class ReadModelView(SQLAlchemyTrackingRecorder):
    """A projection's materialised view: its tables plus the library's tracking table.

    Bound subclasses (see ReadModel.bound) set `model` and `tag`, so the tables this view
    creates are the ones of that projection at that version, e.g. rm_plan_state_v1."""

    model: ClassVar[Any] = None
    tag: ClassVar[str] = ""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            # eventsourcing-sqlalchemy names every tracking record class alike: one per table is meant.
            warnings.filterwarnings("ignore", message="This declarative base already contains a class")
            super().__init__(datastore, **kwargs)
        self.metadata = MetaData()
        self.t: dict[str, Table] = self.model.define(self.metadata, self.tag)
        self.tables.extend(self.t.values())

    def lock_position(self, session: Session, application_name: str) -> int | None:
        """The committed position, read with this read model's write lock held until commit, so
        two processes never project the same notification: the second one waits, then sees
        the first one's position and skips what it already did. The lock must not depend on
        the tracking row, which a fresh table does not have yet: PostgreSQL takes a transaction
        advisory lock named for the table; SQLite takes the database's write lock first (its
        transactions otherwise begin at the first write, after the position was read)."""
        table = self.tracking_table
        where = table.c.application_name == application_name
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"), {"name": table.name})
        elif dialect == "sqlite":
            session.execute(update(table).where(where).values(notification_id=table.c.notification_id))
        return session.execute(select(table.c.notification_id).where(where)).scalar_one_or_none()

    def lock_positions(self, session: Session, partition: str | None = None) -> dict[str, int]:
        """Every tracking row (the read model's own and any partition's: projections/partition_keys.py),
        read under the write lock: exclusive for a single run (`partition` None); for a partition,
        the read model's lock shared (partitions run side by side; a single run waits for all of
        them) and the partition's own lock exclusive (two runs of one partition take turns)."""
        table = self.tracking_table
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            if partition is None:
                session.execute(text(f"SELECT pg_advisory_xact_lock({LOCK_KEY})"), {"name": table.name})
            else:
                session.execute(text(f"SELECT pg_advisory_xact_lock_shared({LOCK_KEY}), pg_advisory_xact_lock("
                                     f"{LOCK_KEY.replace(':name', ':part')})"),
                                {"name": table.name, "part": f"{table.name}#{partition}"})
        elif dialect == "sqlite":
            session.execute(update(table).values(notification_id=table.c.notification_id))
        rows = session.execute(select(table.c.application_name, table.c.notification_id)).all()
        return {name: position for name, position in rows}

    def positions(self) -> dict[str, int]:
        """Every tracking row, as committed (no lock)."""
        table = self.tracking_table
        with self.transaction(commit=False) as session:
            rows = session.execute(select(table.c.application_name, table.c.notification_id)).all()
        return {name: position for name, position in rows}

    def forget_positions(self, session: Session, names: list[str], through: int) -> None:
        """Delete the tracking rows `names` at or below `through` (partition rows folded into the own row)."""
        table = self.tracking_table
        if names:
            session.execute(delete(table).where(table.c.application_name.in_(names),
                                                table.c.notification_id <= through))

    def record_position(self, session: Session, tracking: Any) -> None:
        """Record `tracking` as the position, in the batch's transaction, under the lock
        `lock_position` took (so the committed position is below it): one statement, where the
        library's `_insert_tracking` reads and writes through the ORM."""
        table = self.tracking_table
        moved = session.execute(update(table).where(
            table.c.application_name == tracking.application_name, table.c.notification_id < tracking.notification_id,
        ).values(notification_id=tracking.notification_id))
        if not moved.rowcount:  # type: ignore[attr-defined]
            session.execute(insert(table).values(application_name=tracking.application_name,
                                                 notification_id=tracking.notification_id))

    def close(self) -> None:
        engine = self.datastore.engine
        if engine is not None:
            engine.dispose()
