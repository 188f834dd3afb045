"""The test clock over HTTP, like Stripe's test clocks: only on a server started with
$SUBLEDGER_TEST_CLOCK (a test ledger); on the system clock the routes do not exist (404).

`POST /v1/test-clock/advance {"to": instant}` (operator token) moves the clock forward, never
back, then records what fell due (`Ledger.advance`). The instant is kept in the `test_clock`
side table, so every worker process of `subledger serve --workers N` follows it: each request
on a test clock first moves its worker's clock up to the stored instant (`follow`).
"""

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Integer, MetaData, Table, select, update

from adapters.http import idempotency
from adapters.http.auth import Caller, Operator
from adapters.http.json_bodies import CallerFirst
from adapters.http.problems import documented, problem_of
from adapters.instants import parse_instant
from adapters.side_tables import SideTables, insert_if_absent
from domain.clock import TestClock, run_until
from domain.errors import AdvanceIncomplete, LedgerError
from projections.store import UtcDateTime, iso
from projections.views import event_types

metadata = MetaData()
clock_table = Table("test_clock", metadata, Column("id", Integer, primary_key=True),
                    Column("now", UtcDateTime, nullable=False))


class ClockStore:
    """The shared instant of a test ledger's server processes."""

    def __init__(self, db_url: str, clock: TestClock) -> None:
        self.tables = SideTables(db_url, metadata)
        self.clock = clock
        start = dict(id=1, now=clock.now())
        self.tables.run(lambda conn: conn.execute(insert_if_absent(conn, clock_table, start)))

    def follow(self) -> None:
        """Move this process's clock up to the shared instant (never back)."""
        stored = self.tables.run(lambda conn: conn.execute(select(clock_table.c.now)).scalar_one())
        if stored > self.clock.now():
            try:
                self.clock.move_to(stored)
            except LedgerError:
                pass  # another request of this process moved it further meanwhile

    def move_at_least(self, to: datetime) -> bool:
        """Compare-and-set: the shared instant moves to `to`, or, where another request moved it
        further meanwhile, this process follows it there (a stop of a simulated advance that
        another advance has passed) and False."""
        self.follow()
        moved = self.tables.run(lambda conn: conn.execute(
            update(clock_table).where(clock_table.c.id == 1, clock_table.c.now <= to).values(now=to)).rowcount)
        if moved == 1:
            self.clock.move_to(to)
        else:
            self.follow()
        return moved == 1

    def close(self) -> None:
        self.tables.close()


def follow(request: Request) -> None:
    """Dependency of every route that reads the clock: no-op on the system clock."""
    store = getattr(request.app.state, "test_clock", None)
    if store is not None:
        store.follow()


Following = Depends(follow)


class Advance(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, as a command's is
    to: str = Field(description="The instant to move to, ISO-8601 (UTC when no offset is given).",
                    examples=["2026-05-01T00:00:00Z"], max_length=64)


log = logging.getLogger("subledger.http")
router = APIRouter(prefix="/v1/test-clock", tags=["test clock"], route_class=CallerFirst,
                   responses=documented(400, 401, 403, 409, 503))




@router.get("", summary="The test clock's instant")
def now(request: Request, caller: Caller) -> dict[str, Any]:
    """The instant this test ledger's server runs at."""
    store: ClockStore = request.app.state.test_clock
    store.follow()
    return {"now": iso(store.clock.now())}


@router.post("/advance", summary="Move the test clock forward and record what fell due")
def advance(request: Request, caller: Operator, body: Annotated[Advance, Body()],
            idempotency_key: idempotency.KeyHeader = None,
            ) -> JSONResponse:
    """Operator token only. Refuses moving backwards (409 `clock_conflict`); then every
    workspace's renewals, trial ends, scheduled changes and notices due by then are recorded."""
    described = {"path": request.url.path, "body": body.model_dump(mode="json")}
    replay = idempotency.replay_or_conflict(request, caller, idempotency_key, described)
    if replay is not None:
        return replay
    ledger = request.app.state.ledger
    store: ClockStore = request.app.state.test_clock
    try:
        try:
            to = parse_instant(body.to)
        except ValueError as e:
            raise LedgerError("invalid_request", f"to: {e}") from None
        store.follow()
        if to < store.clock.now():  # refused before any stop is recorded
            raise LedgerError("clock_conflict", f"the test clock never goes back: it is at {iso(store.clock.now())}")
        try:
            done, failed = run_until(ledger, to, store.move_at_least), None
        except AdvanceIncomplete as e:  # the clock moved and every other workspace lived up to it
            done, failed = e.done, e
            for ws, error in e.failed.items():
                if not isinstance(error, LedgerError):
                    log.error("the test clock passed over %s", ws, exc_info=error)
        recorded = [e for events in done.values() for e in events]
        lived = {"now": iso(ledger.clock.now()), "due": {ws: event_types(events) for ws, events in done.items()},
                 "position": ledger.position_of(recorded) if recorded else None}
        response = problem_of(failed, request, **lived, failed=failed.failures()) if failed else \
            JSONResponse({"ok": True, **lived})
    except LedgerError as e:
        response = problem_of(e, request)
    return idempotency.remember(request, caller, idempotency_key, described, response)
