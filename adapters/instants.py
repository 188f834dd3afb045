"""Instants typed by people (flags, scenario files, $SUBLEDGER_TEST_CLOCK): ISO-8601, UTC when no
offset is given, and within the years the ledger computes periods in (a year-9999 instant has no
next year)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from domain.clock import Clock, SystemClock, TestClock
from domain.errors import LedgerError

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
EXAMPLE = "2026-04-01T00:00:00Z"


def parse_instant(text: object) -> datetime:
    """The instant in UTC; ValueError (saying what is expected) for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"must be an ISO-8601 string such as {EXAMPLE}")
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not ISO-8601 (e.g. {EXAMPLE})") from None
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    try:
        within = EARLIEST <= at < LATEST  # year 1 an hour east of UTC is before year 1 in UTC: an OverflowError
    except OverflowError:
        within = False
    if not within:
        raise ValueError(f"{text[:40]!r} is out of range: instants run from 1970 up to 9000")
    return at.astimezone(timezone.utc)


def given_instant(text: str | None, name: str, *, blank_is_none: bool = False) -> datetime | None:
    """An optional instant from a flag or a query parameter; a bad one (an empty one too: `--at ""`
    is a mistake) is refused, named. A form's field left empty is none (`blank_is_none`)."""
    if text is None or (blank_is_none and not text):
        return None
    try:
        return parse_instant(text)
    except ValueError as e:
        raise LedgerError("invalid_request", f"{name}: {e}") from None


def check_window(start: datetime | None, end: datetime | None, names: tuple[str, str]) -> None:
    """A window [start, end) that is empty because it ends before it starts is a mistake, not "nothing found"."""
    if start is not None and end is not None and start >= end:
        raise LedgerError("invalid_request", f"{names[0]} ({start.isoformat()}) must be before {names[1]} "
                          f"({end.isoformat()})")


def configured_clock() -> Clock:
    """The system clock; `SUBLEDGER_TEST_CLOCK=<instant>` pins a test clock instead, for working on
    a test ledger (a scenario's or the demo's) from the command line or the HTTP API. It can never
    backdate a real ledger: one kept on the system clock refuses test-clock writers (clock_conflict)."""
    pinned = os.environ.get("SUBLEDGER_TEST_CLOCK")
    if not pinned:
        return SystemClock()
    try:
        return TestClock(parse_instant(pinned))
    except ValueError as e:
        raise LedgerError("invalid_request", f"SUBLEDGER_TEST_CLOCK {e}") from None
