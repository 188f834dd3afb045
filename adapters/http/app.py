"""The FastAPI application of `subledger serve`: one Ledger per process, shared by requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI, Request

from adapters import console
from adapters.app import build_ledger
from adapters.http import commands, problems, read_side, reads, replays, test_clock, tokens_api, webhooks_routes
from adapters.http.body_limit import BodyLimit
from adapters.http.idempotency import IdempotencyStore
from adapters.http.plain_urls import PlainUrls
from adapters.http.quotes import QuoteStore
from adapters.http.read_side import ReadSide
from adapters.http.stripe_webhook import SeenEvents, webhook_router
from adapters.http.test_clock import ClockStore
from adapters.settings import database_url
from adapters.tokens import TokenStore
from domain.clock import Clock, TestClock
from domain.ledger import Ledger
from domain.payments import PaymentGateway


def create_app(db: str | None = None, *, catalog: str | Path = "forms", clock: Clock | None = None,
               payments: PaymentGateway | None = None, quote_ttl: timedelta | None = None) -> FastAPI:
    """The API on the ledger of `db` (default $SUBLEDGER_DB, else ./subledger.db). On a test
    clock it also serves /v1/test-clock (adapters/http/test_clock.py)."""
    url = database_url(db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.read_side.close()
        app.state.ledger.close()
        for store in (app.state.tokens, app.state.idempotency, app.state.quotes, app.state.test_clock):
            if store is not None:
                store.close()
        app.state.stripe_events.close()

    app = FastAPI(title="subledger", version="1", lifespan=lifespan,
                  description="An event-sourced subscription ledger: commands, previews and quotes, reads.")
    app.state.db = url
    app.state.ledger = build_ledger(url, catalog=catalog, clock=clock, payments=payments)
    app.state.tokens = TokenStore(url)
    ledger_clock = app.state.ledger.clock
    app.state.idempotency = IdempotencyStore(url, ledger_clock)
    app.state.quotes = QuoteStore(url, quote_ttl)
    app.state.test_clock = ClockStore(url, ledger_clock) if isinstance(ledger_clock, TestClock) else None
    app.state.read_side = ReadSide(app.state.ledger)
    app.state.stripe_events = SeenEvents(url)
    problems.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(PlainUrls)
    for router in (read_side.router, reads.router, replays.router, tokens_api.router, webhooks_routes.router,
                   commands.router, webhook_router()):
        app.include_router(router)
    app.include_router(console.router, prefix="/console")
    if app.state.test_clock is not None:
        app.include_router(test_clock.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    return app


def ledger_of(request: Request) -> Ledger:
    return request.app.state.ledger


def app_from_env() -> FastAPI:
    """The app `subledger serve` runs in each worker: the database from $SUBLEDGER_DB, the catalog
    from $SUBLEDGER_CATALOG, the clock as the command line chooses it."""
    import os

    from adapters.instants import configured_clock
    return create_app(catalog=os.environ.get("SUBLEDGER_CATALOG", "forms"), clock=configured_clock())
