"""Billing periods: calendar months or years anchored on the start instant.

The anchor's day of month is kept: a period that would land on a day the month
lacks clamps to the month's last day (Jan 31 -> Feb 28/29 -> Mar 31).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTHS = {"month": 1, "year": 12}


def add_months(anchor: datetime, months: int) -> datetime:
    """The anchor moved by whole months, its day clamped to the target month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def days(self) -> int:
        return days_between(self.start, self.end)


def period_number(anchor: datetime, interval: str, n: int) -> Period:
    """The n-th period (0-based) of a subscription anchored at `anchor`."""
    step = MONTHS[interval]
    return Period(add_months(anchor, step * n), add_months(anchor, step * (n + 1)))


def period_containing(anchor: datetime, interval: str, at: datetime) -> tuple[int, Period]:
    """The period (and its number) that contains `at`; `at` never precedes the anchor."""
    if at < anchor:
        raise ValueError("instant precedes the subscription anchor")
    step = MONTHS[interval]
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    n = max(months // step - 1, 0)
    while period_number(anchor, interval, n + 1).start <= at:
        n += 1
    return n, period_number(anchor, interval, n)


def days_between(start: datetime, end: datetime) -> int:
    """Whole calendar days, start day included, end day excluded (the Kill Bill convention)."""
    return (end.date() - start.date()).days


def plus_days(at: datetime, days: int) -> datetime:
    return at + timedelta(days=days)
