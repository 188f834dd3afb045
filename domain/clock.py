"""The clock port: production time that cannot be set, and test time that only moves forward.

A ledger database records which kind writes it (domain/ledger.py LedgerCreated), so test time
never enters a ledger kept on the system clock.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol

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


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise LedgerError("invalid_request", f"instant {at.isoformat()} needs a timezone (e.g. Z)")
    return at.astimezone(timezone.utc)
