"""Where this process's saves landed in the notification log, so that a writer can tell a
reader which position to wait for (`min_position`) without asking the database.

A mixin of the Ledger application: the library calls `_notify` after every save; group
commit (domain/group_commit.py) calls it for the saves it shares.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

MAX_POSITIONS = 10_000


class Positions:
    """The notification id of each event this process saved, the latest MAX_POSITIONS kept."""

    if TYPE_CHECKING:
        recorder: Any

    def _init_positions(self) -> None:
        self._positions: OrderedDict[tuple[Any, int], int] = OrderedDict()
        self._positions_lock = threading.Lock()

    def _notify(self, recordings: list[Any]) -> None:
        """Remember where this process's saves landed in the notification log (position_of)."""
        with self._positions_lock:
            for r in recordings:
                self._positions[(r.domain_event.originator_id, r.domain_event.originator_version)] = r.notification.id
            while len(self._positions) > MAX_POSITIONS:  # O(1): a dict finds its first key by a scan
                self._positions.popitem(last=False)

    def positions(self, events: list[Any]) -> list[int | None]:
        """Each event's notification id, where this process saved it (else None)."""
        return [self._positions.get((e.originator_id, e.originator_version)) for e in events]

    def position_of(self, events: list[Any]) -> int:
        """The notification id of the last of `events` (what a reader passes as min_position); for
        events this process did not save (a replay), the log's head, which is at or after them."""
        known = self.positions(events)
        if events and all(known):
            return max(known)  # type: ignore[type-var]
        return self.recorder.max_notification_id() or 0
