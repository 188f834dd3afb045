"""Loading workspaces: fresh for reading, optimistic for deciding.

The library's aggregate cache runs without fast-forwarding (adapters/settings.py), so a cached
workspace is what this process last saved or read. A read (`get`) then asks the store for the
events since, as the library's fast-forward would, and answers the workspace as it stands. A
decision (`load_for_decision`) skips that query: it decides on the cached copy, and when
another process wrote in between, the save fails the version check (IntegrityError: nothing is
recorded, the cached copy is dropped) and the command is decided again on a fresh load. A
refusal decided on a cached copy is decided again on a fresh one before it is answered, and a
workspace with a charge in flight is always loaded fresh, so money is only ever asked for from
the workspace as the store holds it.

The cache never holds an object a command goes on changing: only `remember` puts a saved
workspace there (not the library's save), a copy unless the command is done with it. A
decision reads the cached object itself and changes only copies of it; a command's Result
hands it out to be read.

A mixin of the Ledger application; it relies on the Ledger's `repository` and `events`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError

from domain.commands import check_workspace_id
from domain.errors import DECISION_ERRORS, LedgerError
from domain.subscription import Subscription, workspace_uuid
from domain.topics import UnknownTopic

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from uuid import UUID

    from eventsourcing.application import ProcessingEvent, Repository
    from eventsourcing.persistence import EventStore


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's projector without its per-event protocol check: every stored event of
    this ledger is one of its own classes, each with `mutate`."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class Loading:
    """`get` (fresh), `load_for_decision` (the cached copy), `remember` and `forget`; and
    snapshots taken from the aggregate in hand."""

    if TYPE_CHECKING:
        recorder: Any
        repository: Repository[Any]
        events: EventStore[Any]
        snapshots: EventStore[Any] | None
        snapshotting_intervals: dict[type, int]

        def take_snapshot(self, aggregate_id: Any, version: int | None = None, projector_func: Any = None) -> None: ...

        def workspace_events(self, workspace_id: str, gt: int | None = None,
                             lte: int | None = None) -> list[Any]: ...

    def get(self, workspace_id: str, at: datetime | None = None) -> Subscription | None:
        """The workspace now, as the store holds it, or as it was at `at` (replaying its events
        up to that instant)."""
        check_workspace_id(workspace_id)
        oid = workspace_uuid(workspace_id)
        with self.reading_history(workspace_id):
            sub = self._cached(oid)
            if sub is None:
                try:
                    sub = self.repository.get(oid, projector_func=project)
                except AggregateNotFoundError:
                    return None
            if self.repository.cache is not None:  # even after a miss: another thread may have cached an older copy
                newer = list(self.events.get(oid, gt=sub.version))
                if newer:
                    sub = project(sub, newer)
                    self.remember(sub)
        if at is None or sub.modified_on <= at:
            return sub
        version = max((e.originator_version for e in self.workspace_events(workspace_id) if e.timestamp <= at), default=0)
        return self.repository.get(oid, version=version, projector_func=project) if version else None

    @contextmanager
    def reading_history(self, workspace_id: str) -> Iterator[None]:
        """Folding the workspace's stored events: a failure other than a refusal is named by
        `_history_error` (a topic naming none of the ledger's classes included)."""
        try:
            yield
        except DECISION_ERRORS as e:
            if isinstance(e, LedgerError) and not isinstance(e, UnknownTopic):
                raise
            raise self._history_error(workspace_id, e) from e

    def _history_error(self, workspace_id: str, error: Exception) -> Exception:
        """A workspace that fails to load: when its stored events fail their hash chain (an
        event's topic or payload changed by hand, so it no longer reads as the class it names),
        event_chain_broken naming where; else the error itself, a bug. Walked only on failure."""
        verify_chain = getattr(self.recorder, "verify_chain", None)
        report = verify_chain(workspace_uuid(workspace_id)) if callable(verify_chain) else None
        first = getattr(report, "first", None)
        if first is None:
            return error
        return LedgerError("event_chain_broken", f"the stored events of {workspace_id} fail their hash chain at "
                           f"version {first.version} ({first.problem}): they were changed by hand. Run "
                           "`subledger audit verify`")

    def load_for_decision(self, workspace_id: str, *, fresh: bool = False) -> tuple[Subscription | None, bool]:
        """The workspace to decide a command on, and whether it is as the store holds it: unless
        `fresh`, this process's cached workspace, which another process may have moved past.
        That is the cached object itself, to be read only: catching up, deciding and recording
        work on copies (Ledger._catch_up, Subscription.decide, kept)."""
        if not fresh:
            sub = self._cached(workspace_uuid(workspace_id), copied=False)
            if sub is not None and not sub.pending_charges:
                return sub, False
        return self.get(workspace_id), True

    def _cached(self, oid: UUID, *, copied: bool = True) -> Subscription | None:
        """The cached workspace, if this process has it: a copy unless not `copied`."""
        cache = self.repository.cache
        if cache is None:
            return None
        try:
            sub = cache.get(oid)
        except KeyError:
            return None
        return copy.deepcopy(sub) if copied else sub

    def _record(self, processing_event: ProcessingEvent[Any]) -> list[Any]:
        """The library's, except that it does not put the saved aggregates in the cache (its way
        with fast-forward off): `remember` caches the workspace once its save is known, as a copy
        unless the command is done with it, so no other thread ever reads an object that a
        command goes on changing (catching up saves and changes the same one, round after round)."""
        return self.events.put(processing_event.events, tracking=processing_event.tracking,
                               **processing_event.saved_kwargs)

    def remember(self, sub: Subscription, *, done: bool = False) -> None:
        """Cache the workspace as saved (or read), the state later commands decide on: a copy,
        unless the command is `done` with it (nothing changes it any more: it is only read)."""
        if self.repository.cache is not None:
            self.repository.cache.put(sub.id, sub if done else copy.deepcopy(sub))

    def forget(self, sub: Subscription) -> None:
        """After a failed save the cached workspace may be ahead of the store or behind another
        writer: the retry reads the store."""
        cache = self.repository.cache
        if cache is not None:
            try:
                cache.get(sub.id, evict=True)
            except KeyError:
                pass

    def _take_snapshots(self, processing_event: ProcessingEvent[Any]) -> None:
        """Snapshot a workspace whose save reached a multiple of its interval from the aggregate
        just saved, which is that version's state, instead of rebuilding it from the store as
        the library does (its way stays for an interval reached within a save of several)."""
        if self.snapshots is None:
            return
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate)) if aggregate is not None else None
            if not interval or event.originator_version % interval:
                continue
            if aggregate.version == event.originator_version:
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])
            else:
                self.take_snapshot(event.originator_id, version=event.originator_version, projector_func=project)
