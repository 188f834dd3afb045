"""The clock port: production time that cannot be set, and test time that only moves forward.

A ledger database records which kind writes it (domain/ledger.py LedgerCreated), so test time
never enters a ledger kept on the system clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from domain.errors import DECISION_ERRORS, AdvanceIncomplete, LedgerError, about_the_workspace


class Clock(Protocol):
    kind: str
    """"system" or "test": a ledger database is written by one kind only (LedgerCreated)."""

    def now(self) -> datetime: ...


class SystemClock:
    """Production time: the system's UTC clock. It cannot be set, so nothing is backdated."""

    kind = "system"

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class TestClock:
    """Simulated time for tests, scenarios and the demo. It only moves forward."""

    __test__ = False
    kind = "test"

    def __init__(self, start: datetime) -> None:
        self._now = _utc(start)

    def now(self) -> datetime:
        return self._now

    def move_to(self, at: datetime) -> None:
        at = _utc(at)
        if at < self._now:
            raise LedgerError("invalid_request", f"the test clock never goes back: {at.isoformat()} < {self._now.isoformat()}")
        self._now = at


MAX_STOPS = 100_000


def run_until(ledger: Any, until: datetime, move: Callable[[datetime], None]) -> dict[str, list[Any]]:
    """Test time moved forward to `until` as a scheduler running all along would have lived it:
    the clock (moved by `move`: a shared test clock stores its instant) stops at each instant
    something falls due on the way, and the ledger's `advance` records what fell due then. So
    a card is retried on each of its retry days, not all at once at the end, which is what a
    scheduler that was not running does (domain/subscription/dunning.py). What fell due, by
    workspace, in the order recorded."""
    until = _utc(until)
    done: dict[str, list[Any]] = {}
    failed: dict[str, BaseException] = {}

    def record() -> None:
        try:
            recorded = ledger.advance()
        except AdvanceIncomplete as e:  # the others live on; the failed ones are named at the end
            recorded = e.done
            failed.update(e.failed)
        for workspace_id, events in recorded.items():
            done.setdefault(workspace_id, []).extend(events)

    record()  # what is due already
    for _ in range(MAX_STOPS):
        now = ledger.clock.now()
        stop = min([until, *_next_stops(ledger, now, until)])
        move(stop)
        record()
        if stop == until:
            if failed:
                raise AdvanceIncomplete(done, failed)
            return done
    raise LedgerError("invalid_request", f"more than {MAX_STOPS} instants fall due before {until.isoformat()}: what "
                      f"fell due up to {ledger.clock.now().isoformat()} is recorded; move the clock again to go on")


def _next_stops(ledger: Any, now: datetime, until: datetime) -> list[datetime]:
    """After a run at `now`: the due index's next instant, and for each workspace still due (a
    charge's outcome unknown, asked again at each stop, or a last fact after `now`, which it
    waits for) its own next instant."""
    if ledger.due_index:
        stops, still_due = [ledger.recorder.next_due_after(now)], ledger.due_workspaces(now)
    else:
        stops, still_due = [], ledger.due_workspaces(until)  # every workspace
    for ws in still_due:
        sub = loaded(ledger, ws)
        if sub is not None:
            stops.append(max(sub.next_due_at() or sub.modified_on, sub.modified_on))
    return [at for at in stops if at is not None and at > now]


def first_stop(ledger: Any, until: datetime) -> datetime | None:
    """Where a test clock with no record of where it was (`subledger advance` on a pinned
    SUBLEDGER_TEST_CLOCK) starts living up to `until`: the first instant something fell due
    (the due index's), None if nothing did. A workspace whose last fact is later joins at that
    fact (Ledger.advance)."""
    from domain.ledger import due_instant  # the due index's own instant (domain.ledger imports this module)

    until = _utc(until)
    due = [at for ws in ledger.due_workspaces(until) if (sub := loaded(ledger, ws)) is not None
           and (at := due_instant(sub)) is not None]
    return min(min(due), until) if due else None


def loaded(ledger: Any, workspace_id: str) -> Any:
    """The workspace, or None when its history fails to load: `Ledger.advance` names it, and
    the other workspaces' stops go on."""
    try:
        return ledger.get(workspace_id)
    except DECISION_ERRORS as e:
        if not about_the_workspace(e):
            raise
        return None


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise LedgerError("invalid_request", f"instant {at.isoformat()} needs a timezone (e.g. Z)")
    return at.astimezone(timezone.utc)
