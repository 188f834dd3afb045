"""Group commit: saves made at the same time by several threads of one process share one
transaction, so the database's commit (and the library's table lock) is paid once for all.

No timer and no thread of its own: the first caller to arrive while no commit is running leads,
commits what is queued (its own save, plus whatever other threads queued meanwhile) and hands
the lead to the next waiting caller. One caller alone therefore commits at once, in a
transaction of its own, exactly as `Application.save` does. Each caller returns only after the
transaction holding its events has committed. When a shared transaction fails (a conflict on
one aggregate fails them all), each save in it is tried again alone, so only the one that
conflicted sees the error and retries its own command. Two saves of one aggregate never share
a transaction: the second waits for the next one. One save is one caller's events: what it
saved together stays together, in one transaction, in the order given; notification order is
commit order as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate

MAX_BATCH = 64


@dataclass(eq=False)
class _Pending:
    ids: frozenset[Any]
    collected: ProcessingEvent[Any]
    """Its events, taken from the aggregates by the caller's thread as it queues."""
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    error: BaseException | None = None
    recordings: list[Any] = field(default_factory=list)


def collect(objs: tuple[Any, ...], kwargs: dict[str, Any]) -> ProcessingEvent[Any]:
    """`ProcessingEvent.collect_events` with plain class checks: the library's runtime protocol
    checks cost about 5% of a command's CPU."""
    collected: ProcessingEvent[Any] = ProcessingEvent()
    for obj in objs:
        if isinstance(obj, BaseAggregate):
            collected.events += obj.collect_events()
            collected.aggregates[obj.id] = obj
        elif obj is not None:
            collected.events.append(obj)
    collected.saved_kwargs.update(kwargs)
    return collected


def _ids(objs: tuple[Any, ...]) -> frozenset[Any]:
    return frozenset(getattr(obj, "originator_id", None) or obj.id for obj in objs if obj is not None)


class GroupCommit:
    """`save(*objs, **kwargs)` as `Application.save`, shared with concurrent callers. Keyword
    arguments given to the recorder are dicts keyed by aggregate id, merged across callers."""

    def __init__(self, app: Application[Any], max_batch: int = MAX_BATCH) -> None:
        self.app = app
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self.transactions = 0
        """Transactions committed with more than one save in them (for tests and benchmarks)."""

    def save(self, *objs: Any, **kwargs: dict[Any, Any]) -> list[Any]:
        me = _Pending(_ids(objs), collect(objs, kwargs))
        with self._lock:
            self._queue.append(me)
            me.lead = not self._leading
            self._leading = True
        while not me.done:
            if not me.lead:
                me.wake.wait()
                me.wake.clear()
            if me.lead and not me.done:
                self._lead()
        if me.error is not None:
            raise me.error
        self.app._take_snapshots(me.collected)  # noqa: SLF001 (finish as Application.save does)
        self.app._notify(me.recordings)  # noqa: SLF001
        return me.recordings

    def _lead(self) -> None:
        """Commit one batch, then hand the lead on (or give it up when nobody waits)."""
        batch = self._take()
        try:
            self._commit(batch)
        except BaseException as e:  # an interrupt: nobody in the batch may wait for ever
            for p in batch:
                if not p.done and p.error is None:
                    p.error = e
            raise
        finally:
            self._finish(batch)
            with self._lock:
                waiting = [p for p in self._queue if not p.done]
                if waiting:
                    waiting[0].lead = True
                    waiting[0].wake.set()
                else:
                    self._leading = False

    def _take(self) -> list[_Pending]:
        with self._lock:
            batch: list[_Pending] = []
            seen: set[Any] = set()
            for p in self._queue:
                if len(batch) < self.max_batch and not (p.ids & seen):
                    batch.append(p)
                    seen |= p.ids
            self._queue = [p for p in self._queue if p not in batch]
            for p in batch:
                p.lead = False
            return batch

    def _commit(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                recordings = self._record([p.collected for p in batch])
            except Exception:  # noqa: BLE001,S110 (each save is tried again alone below, and sees its own error)
                pass
            else:
                self.transactions += 1
                for p in batch:
                    p.recordings = [r for r in recordings if r.domain_event.originator_id in p.ids]
                return
        for p in batch:  # alone, as Application.save
            try:
                p.recordings = self._record([p.collected])
            except BaseException as e:  # noqa: BLE001 (handed to its caller)
                p.error = e

    def _finish(self, batch: list[_Pending]) -> None:
        for p in batch:
            p.done = True
            p.wake.set()

    def _record(self, parts: list[ProcessingEvent[Any]]) -> list[Any]:
        if len(parts) == 1:
            return self.app._record(parts[0])  # noqa: SLF001
        merged: ProcessingEvent[Any] = ProcessingEvent()
        for part in parts:
            merged.events += part.events
            merged.aggregates.update(part.aggregates)
            for key, value in part.saved_kwargs.items():
                merged.saved_kwargs.setdefault(key, {}).update(value)
        return self.app._record(merged)  # noqa: SLF001
