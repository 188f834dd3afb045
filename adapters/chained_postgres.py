"""The tamper-evident PostgreSQL event store (adapters/chained_store.py describes the chain),
in a module of its own so that a SQLite ledger never imports psycopg."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from adapters import chained_postgres_sql, due_index
from adapters.chained_store import (CHAINED_WRITER_STREAM, CREATE_LOCK, UPGRADE_LOCK_TIMEOUT_S, _bytes, _firsts, _since,
                                     _uuid, batches, check_relink)
from replay.verify_chain import ChainReport, Link, Stored, digest, link_all, walk


MAX_LAST_LINKS = 10_000
"""How many streams' last links a process remembers (to chain the next event without a read)."""


def _columns(links: list[Link]) -> list[list[Any]]:
    return [list(col) for col in zip(*[(lk.originator_id, lk.version, lk.notification_id, lk.digest, lk.prev_hash,
                                         lk.hash) for lk in links], strict=True)]


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL: each batch of events is saved by one call of a function of the database
    (adapters/chained_postgres_sql.py), which takes the library's EXCLUSIVE lock, inserts the
    events, links them and writes their due rows: one statement, one round trip, one transaction."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_table = f"{events_table_name}_chain"
        self.meta_table = f"{events_table_name}_chain_meta"
        self.check_identifier_length(self.meta_table)
        self.check_identifier_length(chained_postgres_sql.function_name(events_table_name))
        schema = Identifier(datastore.schema)
        self.chain_ident = SQL("{}.{}").format(schema, Identifier(self.chain_table))
        self.meta_ident = SQL("{}.{}").format(schema, Identifier(self.meta_table))
        self.events_ident = SQL("{}.{}").format(schema, Identifier(events_table_name))
        self.due_ident = SQL("{}.{}").format(schema, Identifier(f"{events_table_name}_due"))
        id_type = Identifier(datastore.originator_id_type)
        self.sql_create_statements += due_index.postgres_statements(self.due_ident, f"{events_table_name}_due", id_type)
        self.upsert_due = due_index.postgres_upsert(self.due_ident, id_type).as_bytes(None)
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {} (originator_id {} NOT NULL, originator_version bigint NOT NULL, "
                "notification_id bigint NOT NULL, digest text NOT NULL, prev_hash text NOT NULL, hash text NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))").format(self.chain_ident, id_type),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value text NOT NULL)").format(self.meta_ident),
            chained_postgres_sql.create_function(
                schema=datastore.schema, events_table=events_table_name, chain_table=self.chain_table,
                due_table=f"{events_table_name}_due",
                id_type=datastore.originator_id_type, channel=self.channel_name, lock_timeout=datastore.lock_timeout),
        ]
        self.insert_links = SQL(
            "INSERT INTO {} SELECT * FROM unnest(%s::{}[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], "
            "%s::text[])").format(self.chain_ident, id_type).as_bytes(None)
        # Rendered once (identifiers are ASCII, settings.SCHEMA): psycopg renders a composed
        # statement on every execute.
        self.save_statement = chained_postgres_sql.call_function(datastore.schema, events_table_name).as_bytes(None)
        self._last_links: OrderedDict[UUID, tuple[int, str]] = OrderedDict()
        self._last_links_lock = threading.Lock()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """One prepared statement on an autocommit connection, its one parameter a JSON document
        (adapters/chained_postgres_sql.py). A version conflict raises the library's IntegrityError
        (get_connection translates psycopg's): nothing is saved."""
        assert kwargs.get("tracking") is None, "the ledger's recorder records no tracking"
        if not stored_events:
            return None
        firsts = _firsts(stored_events)
        known = self._known_prev(firsts)
        events = []
        for s in stored_events:
            oid = _uuid(s.originator_id)
            events.append([oid, s.originator_version, s.topic, chained_postgres_sql.state_text(s.state),
                           digest(s.topic, s.state), known.get(oid) if firsts[oid] == s.originator_version else None])
        due = kwargs.get("due")
        document = chained_postgres_sql.payload(events, due_index.rows(due) if due else [])
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self.save_statement, (document,), prepare=True)
            rows = curs.fetchall()
        if len(rows) != len(stored_events):
            raise AssertionError(f"saved {len(rows)} events of {len(stored_events)}")
        self._remember((_uuid(oid), version, hash_) for _, oid, version, hash_ in rows)
        return [row[0] for row in rows]

    def _known_prev(self, firsts: dict[UUID, int]) -> dict[UUID, str]:
        """The hashes of the links before `firsts` that this process wrote. A committed link never
        changes, and a stale entry names an older version than the one wanted (another process
        wrote since): the function reads those, and any not here, from the chain table."""
        known: dict[UUID, str] = {}
        with self._last_links_lock:
            for oid, first in firsts.items():
                last = self._last_links.get(oid) if first > 1 else None
                if last is not None and last[0] == first - 1:
                    known[oid] = last[1]
        return known

    def _remember(self, links: Iterable[tuple[UUID, int, str]]) -> None:
        """After the commit: the last link of each stream written."""
        with self._last_links_lock:
            for oid, version, hash_ in links:
                self._last_links[oid] = (version, hash_)
                self._last_links.move_to_end(oid)
            while len(self._last_links) > MAX_LAST_LINKS:
                self._last_links.popitem(last=False)

    # ------------------------------------------------------------ due index

    def record_due(self, due: due_index.Due) -> None:
        """The backfill's rows (Ledger.advance); a save writes its own in the save function."""
        if due:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.upsert_due, due_index.columns(due))

    def due_workspaces(self, now: datetime) -> list[str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT workspace_id FROM {} WHERE due_us <= %s ORDER BY due_us").format(self.due_ident),
                         (due_index.micros(now),))
            return [r["workspace_id"] for r in curs.fetchall()]

    def next_due_after(self, at: datetime) -> datetime | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT min(due_us) AS due_us FROM {} WHERE due_us > %s").format(self.due_ident),
                         (due_index.micros(at),))
            return due_index.instant(curs.fetchone()["due_us"])

    def due_index_complete(self) -> bool:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT 1 FROM {} WHERE name = %s").format(self.meta_ident), (due_index.MARKER,))
            return curs.fetchone() is not None

    def mark_due_index_complete(self) -> None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self.meta_ident),
                         (due_index.MARKER, _since(0, None)))

    def forget_due_index(self) -> None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("DELETE FROM {} WHERE name = %s").format(self.meta_ident), (due_index.MARKER,))

    def _write(self, curs: Cursor[DictRow], links: list[Link]) -> None:
        if links:
            curs.execute(self.insert_links, _columns(links))

    # ------------------------------------------------------------ first upgrade

    def create_table(self) -> None:
        """Processes opening the same database at once take turns, under a session advisory lock:
        the library replaces its insert function on every start, and two concurrent `CREATE OR
        REPLACE FUNCTION` fail with "tuple concurrently updated"; on a new schema two `CREATE
        TYPE` or `CREATE TABLE` collide on pg_type, so the snapshots table is made here too."""
        with self.datastore.get_connection() as conn:
            with conn.transaction():
                conn.execute(SQL("SET LOCAL lock_timeout = '{}s'").format(UPGRADE_LOCK_TIMEOUT_S))
                conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_LOCK,))
            try:
                super().create_table()
                if self.events_table_name.endswith("_events"):  # the library names them alike
                    snapshots = self.events_table_name.removesuffix("_events") + "_snapshots"
                    PostgresAggregateRecorder(self.datastore, events_table_name=snapshots).create_table()
                self._first_upgrade()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_LOCK,))
                conn.commit()

    def _first_upgrade(self) -> None:
        if self.chain_meta() is not None:
            return
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("SET LOCAL lock_timeout = '{}s'").format(UPGRADE_LOCK_TIMEOUT_S))
            curs.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self.events_ident))  # as writers do
            curs.execute(SQL("SELECT 1 FROM {} WHERE name = 'chain'").format(self.meta_ident))
            if curs.fetchone() is not None:
                return
            curs.execute(SQL("SELECT 1 FROM {} LIMIT 1").format(self.chain_ident))
            if curs.fetchone() is not None:
                return  # links without a record of when they started: leave them to `audit verify`
            curs.execute(SQL("SELECT 1 FROM {} WHERE originator_id = %s LIMIT 1").format(self.events_ident),
                         (CHAINED_WRITER_STREAM,))
            relinked = check_relink(curs.fetchone() is not None)
            count, top = 0, 0
            with conn.cursor(name="chain_upgrade") as events:
                events.execute(SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
                                   "ORDER BY originator_id, originator_version").format(self.events_ident))
                stored = (Stored(_uuid(r["originator_id"]), r["originator_version"], r["notification_id"], r["topic"],
                                 _bytes(r["state"])) for r in events)
                for links in batches(link_all(stored)):
                    self._write(curs, links)
                    count += len(links)
                    top = max(top, *(lk.notification_id for lk in links))
            curs.execute(SQL("INSERT INTO {} VALUES ('chain', %s)").format(self.meta_ident),
                         (_since(count, top, relinked),))

    # ------------------------------------------------------------ verification

    def chain_meta(self) -> dict[str, Any] | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT value FROM {} WHERE name = 'chain'").format(self.meta_ident))
            row = curs.fetchone()
        return json.loads(row["value"]) if row else None

    def verify_chain(self, originator_id: UUID | None = None) -> ChainReport:
        """Walk the stored events against their links, both read in one REPEATABLE READ snapshot."""
        where = SQL("WHERE originator_id = %s ") if originator_id else SQL("")
        params = (originator_id,) if originator_id else ()
        with self.datastore.get_connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with conn.cursor(name="verify_events") as ec, conn.cursor(name="verify_links") as lc:
                ec.execute(SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {} {}"
                               "ORDER BY originator_id, originator_version").format(self.events_ident, where), params)
                lc.execute(SQL("SELECT originator_id, originator_version, notification_id, digest, prev_hash, hash "
                               "FROM {} {}ORDER BY originator_id, originator_version").format(self.chain_ident, where),
                           params)
                events = (Stored(_uuid(r["originator_id"]), r["originator_version"], r["notification_id"], r["topic"],
                                 _bytes(r["state"])) for r in ec)
                links = (Link(_uuid(r["originator_id"]), r["originator_version"], r["notification_id"], r["digest"],
                              r["prev_hash"], r["hash"]) for r in lc)
                report = walk(events, links)
        report.since = self.chain_meta()
        return report
