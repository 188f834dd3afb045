"""The clock port: production time that cannot be set, and test time that only moves forward.

A ledger database records which kind writes it (domain/ledger.py LedgerCreated), so test time
never enters a ledger kept on the system clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from domain.errors import LedgerError


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

    def record() -> None:
        for workspace_id, events in ledger.advance().items():
            done.setdefault(workspace_id, []).extend(events)

    record()  # what is due already
    for _ in range(MAX_STOPS):
        now = ledger.clock.now()
        # an item still due after the run at `now` waits on a charge's unknown outcome: asked again at each stop
        upcoming = [at for ws in ledger.due_workspaces(until) if (sub := ledger.get(ws)) is not None
                    and (at := sub.next_due_at()) is not None and at > now]
        stop = min([until, *upcoming])
        move(stop)
        record()
        if stop == until:
            return done
    raise LedgerError("invalid_request", f"more than {MAX_STOPS} instants fall due before {until.isoformat()}")


def first_stop(ledger: Any, until: datetime) -> datetime | None:
    """Where a test clock with no record of where it was (`subledger advance` on a pinned
    SUBLEDGER_TEST_CLOCK) starts living up to `until`: the first instant something fell due,
    None if nothing did. Not before the last fact of a workspace whose item fell due before it
    (one waiting on a charge's unknown outcome): it is asked again at the first stop, and
    nothing is recorded before a workspace's last fact."""
    from domain.ledger import due_instant  # the due index's own instant (domain.ledger imports this module)

    until = _utc(until)
    subs = [sub for ws in ledger.due_workspaces(until) if (sub := ledger.get(ws)) is not None]
    due = [(at, sub.modified_on) for sub in subs if (at := due_instant(sub)) is not None]
    if not due:
        return None
    waiting = [last for at, last in due if at < last]
    return min(max([min(at for at, _ in due), *waiting]), until)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise LedgerError("invalid_request", f"instant {at.isoformat()} needs a timezone (e.g. Z)")
    return at.astimezone(timezone.utc)
