"""The follower: keep every read model current (`subledger project --follow`).

Catch up by polling (partitioned when the backlog is large, projections/partitions.py), then hand
each read model to the library's `ProjectionRunner`, which listens (LISTEN/NOTIFY, PostgreSQL).
A watchdog compares every position with the head; if a runner stops (its listening connection
died) or lags without moving (a lost notification, eventsourcing issue #305), the runners are
stopped and the follower polls its way back before listening again. Tracking makes every
hand-over safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from eventsourcing.projection import ProjectionRunner

from projections.runner import Projections, ReadModelsOutdated

MAX_BACKOFF = 30.0  # ok-float: seconds between catch-up attempts while they keep failing


def stop_runners(runners: list[ProjectionRunner[Any, Any]]) -> list[BaseException]:
    errors = []
    for runner in runners:
        try:
            runner.__exit__(None, None, None)
        except BaseException as e:  # noqa: BLE001 (a dead listener's error is why we stop)
            errors.append(e)
    return errors


def follow(env: Mapping[str, str], stop: threading.Event, *, poll: float = 0.5, stall: float = 5.0,  # ok-float: seconds
           batch: int = 500, log: Callable[[str], None] = print, workers: int | None = None) -> None:
    """Keep every read model current until `stop` is set: poll to catch up, listen, and
    fall back to polling whenever listening fails or stalls (eventsourcing #305). A large
    backlog is caught up by `workers` processes (projections/partitions.py); listening is one."""
    listen = env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres"
    failures = 0
    with Projections(env, batch=batch, workers=workers) as projections:
        while not stop.is_set():
            try:
                taken = projections.catch_up()
            except ReadModelsOutdated as e:  # waiting cannot help: stop, for a supervisor to restart it
                log(f"stopping: {e.message}")
                raise
            except Exception as e:  # noqa: BLE001 (database away: wait and retry)
                failures += 1
                wait = min(MAX_BACKOFF, poll * 2 ** min(failures - 1, 16))
                log(f"catch-up failed, retrying in {wait:g}s: {e!r}")
                stop.wait(wait)  # a failure that repeats must not restart the partitions' processes every poll
                continue
            failures = 0
            if any(taken.values()):
                log(f"caught up by polling: {taken}")
            if not listen:
                stop.wait(poll)
                continue
            runners = projections.start_runners()
            log("listening")
            reason = watch(projections, runners, stop, poll, stall)
            errors = stop_runners(runners)
            if reason:
                log(f"falling back to polling: {reason}" + (f" ({errors[0]!r})" if errors else ""))


def watch(projections: Projections, runners: list[ProjectionRunner[Any, Any]], stop: threading.Event,
          poll: float, stall: float) -> str | None:  # ok-float: seconds
    """Block while the runners keep up; return why they should be replaced, or None on stop."""
    moved: dict[str, tuple[int, float]] = {}
    while not stop.wait(poll):
        if any(r.is_interrupted.is_set() for r in runners):
            return "a runner stopped (listening connection lost?)"
        try:
            rebuilt = projections.moved()
            if rebuilt:  # another process rebuilt them: its swap may not have dropped these tables
                return f"{', '.join(rebuilt)} rebuilt by another process"
            head = projections.head()
            now = time.monotonic()
            for family in projections.running:
                position = projections.position(family)
                last = moved.get(family)
                if last is None or position != last[0] or position >= head:
                    moved[family] = (position, now)
                elif now - last[1] > stall:
                    return f"{family} stalled at {position} of {head}"
        except Exception as e:  # noqa: BLE001
            return f"status check failed: {e!r}"
    return None
