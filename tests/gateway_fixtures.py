"""Fixtures and a worker for the test gateway's tests: `gateway_url` runs a test on SQLite and
on a fresh PostgreSQL schema (that the gateway must create itself)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from adapters.payments import TestPaymentGateway
from domain.payments import ChargeRequest
from tests.conftest import fresh_postgres_schema

TOKENS = ("pm_card_visa", "pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds",
          "pm_card_authenticationRequired")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        yield from fresh_postgres_schema()


@pytest.fixture
def gateway(gateway_url: str) -> Iterator[TestPaymentGateway]:
    made = TestPaymentGateway(gateway_url)
    yield made
    made.close()


def request_for(key: str, method: str = "pm_card_visa", amount: str = "49.00", currency: str = "EUR",
                workspace: str = "ws1", requested_by: str | None = "cmd-1") -> ChargeRequest:
    return ChargeRequest(idempotency_key=key, workspace_id=workspace, payment_method=method,
                         amount=Decimal(amount), currency=currency, description=f"invoice for {key}",
                         requested_by=requested_by)


def charge_keys(url: str, keys: list[str], start: Any, results: Any) -> None:
    """In a process of its own: wait for the others, then charge every key (key i with token i % 4)."""
    gateway = TestPaymentGateway(url)
    start.wait()
    seen = {}
    for key in keys:
        result = gateway.charge(request_for(key, TOKENS[int(key.split("-")[1]) % len(TOKENS)]))
        seen[key] = (result.outcome, result.charge_id, result.decline_code)
    gateway.close()
    results.put(seen)
