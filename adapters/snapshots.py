"""Snapshots pruned to the last few per aggregate, each loaded only if it is as it was taken.

The library snapshots a workspace every 50 events (domain/ledger.py) and keeps every snapshot
it ever took: a workspace with a long history kept hundreds of them (185 MiB for one of 2,000
invoices), though a load only ever reads the latest. `PrunedSnapshots` wraps the ledger's
snapshot recorder (every Ledger made from the environment, SUBLEDGER_SNAPSHOTS_TOPIC,
domain/ledger.py) so that, after a snapshot is stored, the aggregate's older snapshots beyond
the last `keep` are deleted. The events stay: any state can still be replayed from them
(`audit verify` checks the snapshots that are kept against them).

A snapshot is loaded instead of the events before it, so an edited one would change what the
ledger decides. The wrapper records each snapshot's digest (sha256 of its topic and stored
bytes, as the event chain's, replay/verify_chain.py) in `<snapshots table>_digests` just after
storing it (with the pruning), and a load ignores a snapshot whose bytes no longer match its
digest (a warning names it) or that has none yet (another process between the two, or a crash
there): the workspace is then replayed from its events. `audit verify` still reports an edited
snapshot. The read models' runners and partition workers load through it too. Like the event
chain, this catches an edit of the stored rows, not somebody who rewrites the digest too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent

from adapters.chained_store import CREATE_LOCK
from replay.verify_chain import digest

KEEP = 3
log = logging.getLogger(__name__)


class PrunedSnapshots:
    """A snapshot recorder (the library's, wrapped) that keeps each aggregate's last `keep`
    snapshots and loads only those that match the digest recorded when they were taken."""

    def __init__(self, recorder: AggregateRecorder, keep: int = KEEP, *, create_table: bool = False) -> None:
        self.recorder = recorder
        self.keep = keep
        self.sql = _Sql(recorder)
        if create_table:
            self._run(*self.sql.create)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        """Each snapshot's digest is recorded after it, with the pruning: a snapshot left without
        one (a crash between) is only ignored by loads until the next is taken."""
        result = self.recorder.insert_events(stored_events, **kwargs)
        for originator_id in {s.originator_id for s in stored_events}:
            mine = [s for s in stored_events if s.originator_id == originator_id]
            self.prune(originator_id, [(s.originator_version, digest(s.topic, s.state)) for s in mine])
        return result

    def select_events(self, originator_id: UUID | str, **kwargs: Any) -> Sequence[StoredEvent]:
        found = self.recorder.select_events(originator_id, **kwargs)
        if not found:
            return found
        recorded = dict(self._run(self.sql.digests, (self.sql.oid(originator_id),
                                                     min(s.originator_version for s in found)), fetch=True))
        kept = []
        for s in found:
            expected = recorded.get(s.originator_version)
            if expected == digest(s.topic, s.state):
                kept.append(s)
            elif expected is None:
                log.debug("snapshot of %s at version %s has no digest yet: the events are replayed instead",
                          originator_id, s.originator_version)
            else:
                log.warning("snapshot of %s at version %s does not match the digest recorded when it was taken: "
                            "ignored, the events are replayed instead (audit verify names it)",
                            originator_id, s.originator_version)
        return kept

    def prune(self, originator_id: UUID, digests: Sequence[tuple[int, str]] = ()) -> None:
        """Record `digests` (version, digest) of the snapshots just taken, then delete the
        snapshots older than the aggregate's last `keep` and their digests: one transaction."""
        oid = self.sql.oid(originator_id)
        steps: list[Any] = []
        for version, digest_ in digests:
            steps += [self.sql.record, (oid, version, digest_)]
        self._run(*steps, self.sql.prune, (oid, oid, self.keep - 1), self.sql.prune_digests, (oid, oid))

    def _run(self, *steps: Any, fetch: bool = False) -> list[Any]:
        """Statements, each followed by its parameters, in one transaction; with `fetch`, the
        last one's rows."""
        pairs = list(zip(steps[::2], steps[1::2], strict=True))
        datastore: Any = self.recorder.datastore
        if fetch and self.sql.postgres:  # one read: one round trip on the autocommit connection, no BEGIN/COMMIT
            with datastore.get_connection() as conn, conn.cursor() as cursor:
                for sql, args in pairs:
                    cursor.execute(sql, args)
                return [tuple(row.values()) for row in cursor.fetchall()]
        with datastore.transaction(commit=not fetch) as cursor:  # a read takes no writer's lock
            for sql, args in pairs:
                cursor.execute(sql, args)
            return [tuple(row) for row in cursor.fetchall()] if fetch else []


class _Sql:
    """The wrapper's statements in the recorder's dialect (PostgreSQL or SQLite)."""

    def __init__(self, recorder: Any) -> None:
        datastore = recorder.datastore
        self.postgres = hasattr(datastore, "schema")
        name = recorder.events_table_name
        if self.postgres:
            from psycopg.sql import SQL, Identifier

            t = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(name))
            d = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(f"{name}_digests"))
            self.create: Any = [  # processes setting up at once take turns, as the event recorder's (chained_store)
                "SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,),
                SQL("CREATE TABLE IF NOT EXISTS {d} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                    "digest text NOT NULL, PRIMARY KEY (originator_id, originator_version))").format(d=d), ()]
            self.record: Any = SQL("INSERT INTO {d} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING").format(d=d)
            self.digests: Any = SQL("SELECT originator_version, digest FROM {d} WHERE originator_id = %s "
                                    "AND originator_version >= %s").format(d=d)
            self.prune: Any = SQL("DELETE FROM {t} WHERE originator_id = %s AND originator_version < ("
                                  "SELECT originator_version FROM {t} WHERE originator_id = %s "
                                  "ORDER BY originator_version DESC OFFSET %s LIMIT 1)").format(t=t)
            self.prune_digests: Any = SQL("DELETE FROM {d} WHERE originator_id = %s AND originator_version < "
                                          "(SELECT min(originator_version) FROM {t} WHERE originator_id = %s)"
                                          ).format(t=t, d=d)
            self.delete_all: Any = [SQL("DELETE FROM {}").format(t), SQL("DELETE FROM {}").format(d)]
        else:
            t, d = f'"{name}"', f'"{name}_digests"'
            self.create = [f"CREATE TABLE IF NOT EXISTS {d} (originator_id TEXT NOT NULL, originator_version "
                           "INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (originator_id, originator_version))", ()]
            self.record = f"INSERT OR IGNORE INTO {d} VALUES (?, ?, ?)"
            self.digests = f"SELECT originator_version, digest FROM {d} WHERE originator_id = ? AND originator_version >= ?"
            self.prune = (f"DELETE FROM {t} WHERE originator_id = ? AND originator_version < ("
                          f"SELECT originator_version FROM {t} WHERE originator_id = ? "
                          "ORDER BY originator_version DESC LIMIT 1 OFFSET ?)")
            self.prune_digests = (f"DELETE FROM {d} WHERE originator_id = ? AND originator_version < "
                                  f"(SELECT min(originator_version) FROM {t} WHERE originator_id = ?)")
            self.delete_all = [f"DELETE FROM {t}", f"DELETE FROM {d}"]

    def oid(self, originator_id: UUID | str) -> Any:
        """The id as the dialect stores it."""
        oid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        return oid if self.postgres else oid.hex


def discard_snapshots(ledger: Any) -> None:
    """Delete every snapshot and digest (adapters/schema.py DISCARD_SNAPSHOTS_BEFORE says when):
    loads replay the events instead, and snapshot again as they go."""
    store = getattr(ledger, "snapshots", None)
    if store is None:
        return
    recorder = store.recorder if isinstance(store.recorder, PrunedSnapshots) else PrunedSnapshots(store.recorder)
    first, second = recorder.sql.delete_all
    recorder._run(first, (), second, ())
