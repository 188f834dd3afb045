"""The tamper-evident PostgreSQL event store (adapters/chained_store.py describes the chain),
in a module of its own so that a SQLite ledger never imports psycopg."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from adapters import due_index
from adapters.chained_store import CREATE_LOCK, UPGRADE_LOCK_TIMEOUT_S, _bytes, _firsts, _links, _since, _uuid, batches
from replay.verify_chain import ChainReport, Link, Stored, link_all, walk


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL: links are written after the events insert returns their notification ids,
    inside the library's transaction and under its EXCLUSIVE lock on the events table."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_table = f"{events_table_name}_chain"
        self.meta_table = f"{events_table_name}_chain_meta"
        self.check_identifier_length(self.meta_table)
        schema = Identifier(datastore.schema)
        self.chain_ident = SQL("{}.{}").format(schema, Identifier(self.chain_table))
        self.meta_ident = SQL("{}.{}").format(schema, Identifier(self.meta_table))
        self.events_ident = SQL("{}.{}").format(schema, Identifier(events_table_name))
        self.due_ident = SQL("{}.{}").format(schema, Identifier(f"{events_table_name}_due"))
        id_type = Identifier(datastore.originator_id_type)
        self.sql_create_statements += due_index.postgres_statements(self.due_ident, f"{events_table_name}_due", id_type)
        self.upsert_due = due_index.postgres_upsert(self.due_ident, id_type)
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {} (originator_id {} NOT NULL, originator_version bigint NOT NULL, "
                "notification_id bigint NOT NULL, digest text NOT NULL, prev_hash text NOT NULL, hash text NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))").format(self.chain_ident, id_type),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value text NOT NULL)").format(self.meta_ident),
        ]
        self.select_prev = SQL(
            "SELECT originator_id, hash FROM {} WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::{}[], %s::bigint[]))").format(self.chain_ident, id_type)
        self.insert_links = SQL(
            "INSERT INTO {} SELECT * FROM unnest(%s::{}[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], "
            "%s::text[])").format(self.chain_ident, id_type)

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert ids is not None
        wanted = {oid: first - 1 for oid, first in _firsts(stored_events).items() if first > 1}
        prev_of: dict[UUID, str] = {}
        if wanted:
            curs.execute(self.select_prev, (list(wanted), list(wanted.values())))
            prev_of = {_uuid(r["originator_id"]): r["hash"] for r in curs.fetchall()}
        self._write(curs, _links(stored_events, ids, prev_of))
        self._write_due(curs, kwargs.get("due"))
        return ids

    def _write_due(self, curs: Cursor[DictRow], due: due_index.Due | None) -> None:
        """After the table lock: writers meet on the due rows in commit order, never deadlocking."""
        if due:
            curs.execute(self.upsert_due, [list(col) for col in zip(*due_index.rows(due), strict=True)])

    # ------------------------------------------------------------ due index

    def record_due(self, due: due_index.Due) -> None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._write_due(curs, due)

    def due_workspaces(self, now: datetime) -> list[str]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT workspace_id FROM {} WHERE due_us <= %s ORDER BY due_us").format(self.due_ident),
                         (due_index.micros(now),))
            return [r["workspace_id"] for r in curs.fetchall()]

    def due_index_complete(self) -> bool:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT 1 FROM {} WHERE name = %s").format(self.meta_ident), (due_index.MARKER,))
            return curs.fetchone() is not None

    def mark_due_index_complete(self) -> None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self.meta_ident),
                         (due_index.MARKER, _since(0, None)))

    def _write(self, curs: Cursor[DictRow], links: list[Link]) -> None:
        if links:
            columns = list(zip(*[(lk.originator_id, lk.version, lk.notification_id, lk.digest, lk.prev_hash, lk.hash)
                                 for lk in links], strict=True))
            curs.execute(self.insert_links, [list(col) for col in columns])

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
            curs.execute(SQL("INSERT INTO {} VALUES ('chain', %s)").format(self.meta_ident), (_since(count, top),))

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
