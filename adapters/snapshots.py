"""Snapshots pruned to the last few per aggregate.

The library snapshots a workspace every 50 events (domain/ledger.py) and keeps every snapshot
it ever took: a workspace with a long history kept hundreds of them (185 MiB for one of 2,000
invoices), though a load only ever reads the latest. `prune_snapshots` wraps the ledger's
snapshot recorder so that, after a snapshot is stored, the aggregate's older snapshots beyond
the last `keep` are deleted. The events stay: any state can still be replayed from them
(`audit verify` checks the snapshots that are kept against them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent

KEEP = 3


class PrunedSnapshots:
    """A snapshot recorder (the library's, wrapped) that keeps each aggregate's last `keep` snapshots."""

    def __init__(self, recorder: AggregateRecorder, keep: int = KEEP) -> None:
        self.recorder = recorder
        self.keep = keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        result = self.recorder.insert_events(stored_events, **kwargs)
        for originator_id in {s.originator_id for s in stored_events}:
            self.prune(originator_id)
        return result

    def prune(self, originator_id: UUID) -> None:
        """Delete the snapshots older than the aggregate's last `keep`."""
        recorder: Any = self.recorder
        datastore = recorder.datastore
        if hasattr(datastore, "schema"):  # PostgreSQL
            from psycopg.sql import SQL, Identifier

            table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(recorder.events_table_name))
            statement = SQL("DELETE FROM {t} WHERE originator_id = %(id)s AND originator_version < ("
                            "SELECT originator_version FROM {t} WHERE originator_id = %(id)s "
                            "ORDER BY originator_version DESC OFFSET %(skip)s LIMIT 1)").format(t=table)
            params: Any = {"id": originator_id, "skip": self.keep - 1}
        else:  # SQLite
            name = recorder.events_table_name
            statement = (f'DELETE FROM "{name}" WHERE originator_id = ? AND originator_version < ('
                         f'SELECT originator_version FROM "{name}" WHERE originator_id = ? '
                         'ORDER BY originator_version DESC LIMIT 1 OFFSET ?)')
            params = (originator_id.hex, originator_id.hex, self.keep - 1)
        with datastore.transaction(commit=True) as cursor:
            cursor.execute(statement, params)


def prune_snapshots(ledger: Any, keep: int = KEEP) -> None:
    """Keep only the last `keep` snapshots of each aggregate the ledger snapshots from now on."""
    store = getattr(ledger, "snapshots", None)
    if store is not None and not isinstance(store.recorder, PrunedSnapshots):
        store.recorder = PrunedSnapshots(store.recorder, keep)


def discard_snapshots(ledger: Any) -> None:
    """Delete every snapshot (adapters/schema.py DISCARD_SNAPSHOTS_BEFORE says when): loads replay
    the events instead, and snapshot again as they go."""
    store = getattr(ledger, "snapshots", None)
    if store is None:
        return
    recorder: Any = store.recorder
    recorder = getattr(recorder, "recorder", recorder)  # PrunedSnapshots wraps the library's
    datastore = recorder.datastore
    if hasattr(datastore, "schema"):  # PostgreSQL
        from psycopg.sql import SQL, Identifier

        statement: Any = SQL("DELETE FROM {}.{}").format(Identifier(datastore.schema),
                                                        Identifier(recorder.events_table_name))
    else:  # SQLite
        statement = f'DELETE FROM "{recorder.events_table_name}"'
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(statement)
