"""Tamper-evident event stores: the library's SQLite and PostgreSQL application recorders
(the PostgreSQL one in adapters/chained_postgres.py, so that SQLite never imports psycopg),
writing one chain link per event (replay/verify_chain.py) in the transaction that inserts
the events, and reading events and links back in one snapshot to verify them.

adapters/settings.py selects them with the library's APPLICATION_RECORDER_TOPIC, so the
persistence module stays eventsourcing.sqlite / eventsourcing.postgres. On PostgreSQL a
function of the database saves each batch in one statement (adapters/chained_postgres_sql.py):
it takes the library's EXCLUSIVE table lock first, so notification order stays commit order.

First upgrade: when a store has no chain record yet (`<events>_chain_meta`), `create_table`
links the events already stored, once, under the same lock writers take; from then on every
insert links its events. docs/audit.md describes the design.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from adapters import due_index
from domain.errors import LedgerError
from domain.subscription import workspace_uuid
from replay.verify_chain import ChainReport, Link, Stored, link, link_all, walk

UPGRADE_LOCK_TIMEOUT_S = 600
"""How long a process starting during another's first upgrade waits for it (PostgreSQL)."""
CREATE_LOCK = 0x7375626C65646765
"""pg_advisory_lock key ("subledge") that processes creating the event tables take in turn."""


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _bytes(state: Any) -> bytes:
    """A stored state as bytes: a hand edit in the sqlite3 shell can leave TEXT behind."""
    return state.encode("utf-8") if isinstance(state, str) else bytes(state)


def _since(events: int, position: int | None, relinked: bool = False) -> str:
    record = {"chained_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
              "events_linked_as_found": events, "up_to_position": position or 0}
    if relinked:
        record["relinked_missing_chain"] = True
    return json.dumps(record)


CHAINED_WRITER_STREAM = workspace_uuid("__ledger__")
"""The ledger log's stream (domain/ledger.py LedgerCreated): only versions that chain every event
write it, after linking the store, so a store holding it without a chain had its chain deleted."""
RELINK_VAR = "SUBLEDGER_RELINK_AS_FOUND"


def check_relink(written_by_chained_version: bool) -> bool:
    """Whether linking as found may go on: a store written before the chain existed, yes. One a
    chaining version wrote lost its chain (deleted with its record): re-linking would launder any
    edit made meanwhile, so it is refused (event_chain_broken) unless $SUBLEDGER_RELINK_AS_FOUND=yes,
    and then the record says so (`relinked_missing_chain`, shown by `audit verify`)."""
    if not written_by_chained_version:
        return False
    if os.environ.get(RELINK_VAR, "").lower() in ("yes", "y", "1", "true"):
        return True
    raise LedgerError("event_chain_broken", "this store's event chain is missing, but a version that chains every "
                      "event wrote it: its links were deleted, so any edit made since cannot be told. Restore the "
                      f"chain tables from a backup, or set {RELINK_VAR}=yes to link the events as they are now "
                      "(recorded, and shown by `audit verify`)")


def batches(links: Iterator[Link], size: int = 1000) -> Iterator[list[Link]]:
    batch: list[Link] = []
    for lk in links:
        batch.append(lk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _links(stored: Sequence[StoredEvent], ids: Sequence[int], prev_of: dict[UUID, str]) -> list[Link]:
    """Links for a batch of inserted events; `prev_of` holds each stream's previous link hash."""
    out = []
    for s, nid in zip(stored, ids, strict=True):
        oid = _uuid(s.originator_id)
        made = link(Stored(oid, s.originator_version, nid, s.topic, s.state), prev_of.get(oid, ""))
        prev_of[oid] = made.hash
        out.append(made)
    return out


def _firsts(stored: Sequence[StoredEvent]) -> dict[UUID, int]:
    """Each stream's first version in a batch (the link before it is read from the table)."""
    firsts: dict[UUID, int] = {}
    for s in stored:
        firsts.setdefault(_uuid(s.originator_id), s.originator_version)
    return firsts


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite: links are written right after each batch's events, in the same transaction
    (the events insert has taken SQLite's write lock, so the previous links are current)."""

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)

    @property
    def chain_table(self) -> str:
        return f"{self.events_table_name}_chain"

    @property
    def meta_table(self) -> str:
        return f"{self.events_table_name}_chain_meta"

    @property
    def due_table(self) -> str:
        return f"{self.events_table_name}_due"

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *due_index.sqlite_statements(self.due_table),
            f"CREATE TABLE IF NOT EXISTS {self.chain_table} (originator_id TEXT, originator_version INTEGER, "
            "notification_id INTEGER NOT NULL, digest TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, "
            "PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {self.meta_table} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        assert ids is not None
        prev_of = {oid: self._hash_at(c, oid, first - 1) for oid, first in _firsts(stored_events).items()}
        self._write(c, _links(stored_events, ids, prev_of))
        self._write_due(c, kwargs.get("due"))
        return ids

    def _write_due(self, c: SQLiteCursor, due: due_index.Due | None) -> None:
        if due:
            c.executemany(due_index.sqlite_upsert(self.due_table),
                          [(oid.hex, *rest) for oid, *rest in due_index.rows(due)])

    # ------------------------------------------------------------ due index

    def record_due(self, due: due_index.Due) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._write_due(c, due)

    def due_workspaces(self, now: datetime) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT workspace_id FROM {self.due_table} WHERE due_us <= ? ORDER BY due_us",
                      (due_index.micros(now),))
            return [r[0] for r in c.fetchall()]

    def next_due_after(self, at: datetime) -> datetime | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT min(due_us) FROM {self.due_table} WHERE due_us > ?", (due_index.micros(at),))
            return due_index.instant(c.fetchone()[0])

    def due_index_complete(self) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT 1 FROM {self.meta_table} WHERE name=?", (due_index.MARKER,))
            return c.fetchone() is not None

    def mark_due_index_complete(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"INSERT OR IGNORE INTO {self.meta_table} VALUES (?, ?)",
                      (due_index.MARKER, _since(0, None)))

    def forget_due_index(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.meta_table} WHERE name=?", (due_index.MARKER,))

    def _hash_at(self, c: SQLiteCursor, oid: UUID, version: int) -> str:
        if version < 1:
            return ""
        c.execute(f"SELECT hash FROM {self.chain_table} WHERE originator_id=? AND originator_version=?",
                  (oid.hex, version))
        row = c.fetchone()
        return row[0] if row else ""

    def _write(self, c: SQLiteCursor, links: list[Link]) -> None:
        c.executemany(f"INSERT INTO {self.chain_table} VALUES (?,?,?,?,?,?)",
                      [(lk.originator_id.hex, lk.version, lk.notification_id, lk.digest, lk.prev_hash, lk.hash)
                       for lk in links])

    # ------------------------------------------------------------ first upgrade

    def create_table(self) -> None:
        super().create_table()
        if self.chain_meta() is not None:
            return
        with self.datastore.get_connection(commit=True) as conn:
            c = conn.cursor()
            c.execute("BEGIN IMMEDIATE")  # the write lock first: one process links, the others wait
            try:
                self._upgrade(c, conn.cursor())
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _upgrade(self, c: SQLiteCursor, reader: SQLiteCursor) -> None:
        c.execute(f"SELECT 1 FROM {self.meta_table} WHERE name='chain'")
        if c.fetchone() is not None:
            return
        c.execute(f"SELECT 1 FROM {self.chain_table} LIMIT 1")
        if c.fetchone() is not None:
            return  # links without a record of when they started: leave them to `audit verify`
        c.execute(f"SELECT 1 FROM {self.events_table_name} WHERE originator_id IN (?, ?) LIMIT 1",
                  (str(CHAINED_WRITER_STREAM), CHAINED_WRITER_STREAM.hex))
        relinked = check_relink(c.fetchone() is not None)
        reader.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
                       "ORDER BY originator_id, originator_version")
        count, top = 0, 0
        for links in batches(link_all(Stored(UUID(r[1]), r[2], r[0], r[3], _bytes(r[4])) for r in reader.sqlite_cursor)):
            self._write(c, links)
            count += len(links)
            top = max(top, *(lk.notification_id for lk in links))
        c.execute(f"INSERT INTO {self.meta_table} VALUES ('chain', ?)", (_since(count, top, relinked),))

    # ------------------------------------------------------------ verification

    def chain_meta(self) -> dict[str, Any] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT value FROM {self.meta_table} WHERE name='chain'")
            row = c.fetchone()
        return json.loads(row[0]) if row else None

    def verify_chain(self, originator_id: UUID | None = None) -> ChainReport:
        """Walk the stored events against their links, both read in one snapshot."""
        where, params = ("WHERE originator_id=? ", (originator_id.hex,)) if originator_id else ("", ())
        with self.datastore.get_connection(commit=False) as conn, conn.transaction(commit=False) as c:
            links_cursor = conn.cursor()
            c.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
                      f"{where}ORDER BY originator_id, originator_version", params)
            links_cursor.execute(f"SELECT originator_id, originator_version, notification_id, digest, prev_hash, hash "
                                 f"FROM {self.chain_table} {where}ORDER BY originator_id, originator_version", params)
            events = (Stored(UUID(r[1]), r[2], r[0], r[3], _bytes(r[4])) for r in c.sqlite_cursor)
            links = (Link(UUID(r[0]), *r[1:]) for r in links_cursor.sqlite_cursor)
            report = walk(events, links)
            links_cursor.sqlite_cursor.close()
        report.since = self.chain_meta()
        return report
