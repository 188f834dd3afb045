"""The tamper-evident PostgreSQL event store (adapters/chained_store.py describes the chain),
in a module of its own so that a SQLite ledger never imports psycopg."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier

from adapters import due_index
from adapters.chained_store import CREATE_LOCK, UPGRADE_LOCK_TIMEOUT_S, _bytes, _firsts, _links, _since, _uuid, batches
from replay.verify_chain import ChainReport, Link, Stored, link_all, walk


MAX_LAST_LINKS = 10_000
"""How many streams' last links a process remembers (to chain the next event without a read)."""


def _columns(links: list[Link]) -> list[list[Any]]:
    return [list(col) for col in zip(*[(lk.originator_id, lk.version, lk.notification_id, lk.digest, lk.prev_hash,
                                         lk.hash) for lk in links], strict=True)]


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
        self.insert_links_and_due = SQL("WITH links AS ({}) {}").format(self.insert_links, self.upsert_due)
        self._render_once()
        self._last_links: OrderedDict[UUID, tuple[int, str]] = OrderedDict()
        self._last_links_lock = threading.Lock()
        self._made = threading.local()

    def _render_once(self) -> None:
        """The statements of every save as bytes, rendered here once: psycopg renders a composed
        statement on every execute. Identifiers here are ASCII (settings.SCHEMA), so rendering
        them without a connection is exact."""
        self.lock_table_statements = [q.as_bytes(None) if isinstance(q, Composable) else q
                                      for q in self.lock_table_statements]
        self.insert_events_statement = self.insert_events_statement.as_bytes(None)
        self.notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_bytes(None)
        self.insert_links_and_due = self.insert_links_and_due.as_bytes(None)
        self.insert_links = self.insert_links.as_bytes(None)
        self.upsert_due = self.upsert_due.as_bytes(None)
        self.select_prev = self.select_prev.as_bytes(None)

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self.notify_statement)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._made.links = []
        ids = super().insert_events(stored_events, **kwargs)
        self._remember(self._made.links)
        return ids

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        """One more statement after the events insert: the links (and the due rows) together. The
        previous link of a stream is read from the table unless this process wrote it."""
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert ids is not None
        prev_of, wanted = self._known_prev(_firsts(stored_events))
        if wanted:
            curs.execute(self.select_prev, (list(wanted), list(wanted.values())))
            prev_of.update({_uuid(r["originator_id"]): r["hash"] for r in curs.fetchall()})
        links = _links(stored_events, ids, prev_of)
        due = kwargs.get("due")
        if due:
            curs.execute(self.insert_links_and_due, [*_columns(links), *due_index.columns(due)])
        else:
            self._write(curs, links)
        self._made.links = links
        return ids

    def _known_prev(self, firsts: dict[UUID, int]) -> tuple[dict[UUID, str], dict[UUID, int]]:
        """The hashes of the links before `firsts` this process wrote, and the versions it did not.
        A committed link never changes, and a stale entry names an older version than the one
        wanted (another process wrote since), so it is read from the table instead."""
        known: dict[UUID, str] = {}
        wanted: dict[UUID, int] = {}
        with self._last_links_lock:
            for oid, first in firsts.items():
                if first <= 1:
                    continue
                last = self._last_links.get(oid)
                if last is not None and last[0] == first - 1:
                    known[oid] = last[1]
                else:
                    wanted[oid] = first - 1
        return known, wanted

    def _remember(self, links: list[Link]) -> None:
        """After the commit: the last link of each stream written."""
        with self._last_links_lock:
            for lk in links:
                self._last_links[lk.originator_id] = (lk.version, lk.hash)
                self._last_links.move_to_end(lk.originator_id)
            while len(self._last_links) > MAX_LAST_LINKS:
                self._last_links.popitem(last=False)

    def _write_due(self, curs: Cursor[DictRow], due: due_index.Due | None) -> None:
        """After the table lock: writers meet on the due rows in commit order, never deadlocking."""
        if due:
            curs.execute(self.upsert_due, due_index.columns(due))

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
