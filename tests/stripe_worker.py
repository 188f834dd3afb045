"""A process of its own settling a workspace's pending charges through the Stripe gateway."""

from __future__ import annotations

from typing import Any

from adapters.app import build_ledger
from adapters.stripe_gateway import StripeGateway
from domain.errors import LedgerError
from domain.ledger import TestClock
from tests.conftest import utc
from tests.stripe_fixtures import API_KEY


def resolve(db_url: str, api_base: str, start: Any, results: Any) -> None:
    ledger = build_ledger(db_url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")),
                          payments=StripeGateway(db_url, API_KEY, api_base))
    start.wait()
    try:
        done = ledger.resolve_payments("ws")
        results.put(sorted(type(e).__name__ for events in done.values() for e in events))
    except LedgerError as e:
        results.put([e.code])
    finally:
        ledger.close()
