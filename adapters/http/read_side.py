"""The read models behind the API, and read-your-writes.

Every write answers with the notification position it was recorded at; a read may pass
`min_position=N` and is answered only once every read model has processed N. In inline mode
(the default, and what the command line does) a read first catches the read models up itself;
with `SUBLEDGER_READ_MODELS=follower` a `subledger project --follow` process keeps them
current and a read waits for it. Either way the wait is bounded (`SUBLEDGER_READ_WAIT`,
default 5 s); past it the read is refused `read_models_behind` (503), never answered stale.
A `min_position` beyond the ledger's head names no write, so no wait could reach it: it is
refused at once, `position_ahead` (400).
`/readyz` reports each read model's lag behind the ledger's head."""

from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from adapters.app import is_read_only, read_models
from adapters.http.problems import problem
from domain.errors import LedgerError
from domain.ledger import Ledger
from projections.runner import Projections

POLL = 0.05  # ok-float: seconds between looks at the positions while waiting


def _seconds(name: str, default: float) -> float:  # ok-float: seconds
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        raise LedgerError("invalid_request", f"${name} must be a number of seconds") from None


class ReadSide:
    """One Projections on the app's Ledger, made on first use and shared by requests."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.follower = os.environ.get("SUBLEDGER_READ_MODELS", "inline") == "follower"
        self.wait = _seconds("SUBLEDGER_READ_WAIT", 5.0)
        self.far_behind = int(_seconds("SUBLEDGER_READY_LAG", 1000))  # a count, read like the seconds
        """/readyz answers 503 when a read model lags the head by more notifications than this."""
        self._projections: Projections | None = None
        self._made = threading.Lock()
        self._catching_up = threading.Lock()

    @property
    def projections(self) -> Projections:
        with self._made:
            if self._projections is None:
                self._projections = read_models(self.ledger)
            return self._projections

    def close(self) -> None:
        with self._made:
            if self._projections is not None:
                self._projections.close()
                self._projections = None

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def lowest(self) -> int:
        p = self.projections
        p.follow_registry()
        return min((p.position(f) for f in p.running), default=0)

    def catch_up(self) -> None:
        p = self.projections
        if self.follower or is_read_only(p.env):
            return
        with self._catching_up:
            p.catch_up()

    def fresh(self, min_position: int | None) -> Projections:
        """The read models, caught up (inline) and at `min_position` or beyond."""
        if min_position is not None:
            self._recorded(min_position)
        self.catch_up()
        if min_position is not None:
            self._wait_for(min_position, self.lowest, catch_up=True)
        return self.projections

    def events_at(self, min_position: int | None) -> Ledger:
        """The ledger, for reads of the events themselves (explain, as-of, what-if): they are
        current as soon as the event store holds `min_position`."""
        if min_position is not None:
            self._recorded(min_position)
        return self.ledger

    def _recorded(self, wanted: int) -> None:
        """Refuse a position the event store does not hold: every write's position is recorded
        before the write answers, so one beyond the head was never returned."""
        head = self.head()
        if wanted > head:
            raise LedgerError("position_ahead", f"min_position {wanted} is beyond the ledger's head, position {head}: "
                              "no write has been recorded there; pass the position a write returned")

    def _wait_for(self, wanted: int, position: Any, *, catch_up: bool) -> None:
        deadline = time.monotonic() + self.wait
        while (reached := position()) < wanted:
            if time.monotonic() >= deadline:
                raise LedgerError("read_models_behind", f"the read models are at position {reached}, not yet at "
                                  f"min_position {wanted} (waited {self.wait:g} s): retry shortly")
            time.sleep(POLL)
            if catch_up:
                self.catch_up()

    def status(self) -> list[dict[str, Any]]:
        return self.projections.status()


def read_side(request: Request) -> ReadSide:
    return request.app.state.read_side


MinPosition = Annotated[int | None, Query(ge=0, le=2**62, description=(
    "Read your writes: answer only once the read models have processed this notification position "
    "(the `position` a write returned); waits up to a few seconds, else 503 read_models_behind; "
    "a position beyond the ledger's head is 400 position_ahead."))]


def fresh_read_models(side: Annotated[ReadSide, Depends(read_side)], min_position: MinPosition = None) -> Projections:
    return side.fresh(min_position)


def current_ledger(side: Annotated[ReadSide, Depends(read_side)], min_position: MinPosition = None) -> Ledger:
    return side.events_at(min_position)


Fresh = Annotated[Projections, Depends(fresh_read_models)]
"""The read models, current for this read (a dependency: declare it after the caller's checks)."""
Events = Annotated[Ledger, Depends(current_ledger)]

router = APIRouter(tags=["health"])


@router.get("/readyz", responses={503: {"description": "A read model is far behind, or the database is away."}})
def readyz(side: Annotated[ReadSide, Depends(read_side)]) -> Any:
    """Ready when the database answers and every read model is within `SUBLEDGER_READY_LAG`
    notifications of the ledger's head (inline mode catches them up first)."""
    try:
        side.catch_up()
        status = side.status()
    except LedgerError:
        raise
    except Exception as e:  # noqa: BLE001 (the database away is what readiness reports)
        return problem("unavailable", f"the database does not answer: {type(e).__name__}")
    head = max((s["head"] for s in status), default=0)
    lag = {s["projection"]: s["lag"] for s in status}
    body = {"head": head, "mode": "follower" if side.follower else "inline", "max_lag": side.far_behind,
            "read_models": {s["projection"]: {"position": s["position"], "lag": s["lag"]} for s in status}}
    behind = sorted(name for name, v in lag.items() if v > side.far_behind)
    if behind:
        return problem("read_models_behind", f"{', '.join(behind)} more than {side.far_behind} notifications "
                       f"behind the head ({head})", readiness="behind", **body)
    return JSONResponse({"status": "ready", **body})
