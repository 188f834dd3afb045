"""Recovering a charge whose outcome the ledger did not get: the provider did not answer.
(tests/test_payments_simulation.py found the case; this pins it down.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.app import build_ledger
from adapters.payments import TestPaymentGateway
from domain.commands import parse_command
from domain.errors import LedgerError
from domain.ledger import Ledger, TestClock
from domain.payments import ChargeResult, GatewayUnavailable
from tests.conftest import ADMIN, utc


class Unreachable(TestPaymentGateway):
    """The test gateway while `down`: a cancel reaches the provider, the answer is lost."""

    down = False

    def cancel(self, idempotency_key: str) -> ChargeResult:
        result = super().cancel(idempotency_key)
        if self.down:
            raise GatewayUnavailable("the provider did not answer")
        return result


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    made = build_ledger(db_url, catalog="workspace", clock=TestClock(utc("2026-04-11T00:00:00")),
                        payments=Unreachable(db_url))
    yield made
    made.close()


def do(ledger: Ledger, command: str, **args: Any) -> Any:
    return ledger.handle("ws", parse_command(command, args), ADMIN)


def test_R12_abandoning_3ds_while_the_provider_does_not_answer_is_refused_and_the_charge_stays_pending(
        ledger: Ledger) -> None:
    do(ledger, "add-payment-method", payment_method="pm_card_authenticationRequired")
    assert do(ledger, "subscribe", plan="team", seats=2).error.code == "payment_action_required"
    version = ledger.get("ws").version
    ledger.payments.down = True
    with pytest.raises(LedgerError) as refused:
        ledger.abandon_payment("ws")
    assert refused.value.code == "payment_pending"
    assert ledger.get("ws").version == version
    assert [p["action_required"] for p in ledger.get("ws").pending_charges.values()] == [True]

    ledger.payments.down = False
    assert [type(e).__name__ for e in ledger.abandon_payment("ws")] == ["ChargeDeclined"]
    assert ledger.get("ws").pending_charges == {}
    assert ledger.payments.total_succeeded("ws") == 0
