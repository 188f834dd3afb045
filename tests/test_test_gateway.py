"""The test gateway behaves like Stripe in test mode: idempotent per key, across processes.

Runs without the ledger (`pytest --noconftest tests/test_test_gateway.py` while
tests/conftest.py cannot import it)."""

from __future__ import annotations

import multiprocessing
import queue
import re
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from adapters.payments import TestPaymentGateway
from domain.payments import ChargeResult, GatewayUnavailable, IdempotencyMismatch
from tests.gateway_fixtures import charge_keys, gateway, gateway_url, request_for

__all__ = ["gateway", "gateway_url"]


def test_same_key_same_request_returns_the_first_outcome_and_charges_once(gateway: TestPaymentGateway) -> None:
    first = gateway.charge(request_for("inv-1"))
    again = gateway.charge(request_for("inv-1"))
    assert first == again
    assert first.ok and first.charge_id is not None and first.charge_id.startswith("ch_test_")
    assert len(first.charge_id) == len("ch_test_") + 24
    assert len(gateway.charges()) == 1
    assert gateway.total_succeeded() == Decimal("49.00")


def test_a_second_gateway_on_the_same_database_sees_the_charge(gateway_url: str) -> None:
    one, two = TestPaymentGateway(gateway_url), TestPaymentGateway(gateway_url)
    try:
        assert one.charge(request_for("inv-1")) == two.charge(request_for("inv-1"))
        assert len(two.charges()) == 1
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("change, named", [
    ({"amount": "50.00"}, "amount 49.00 (now 50.00)"),
    ({"currency": "USD"}, "currency EUR (now USD)"),
    ({"method": "pm_card_mastercard"}, "payment_method pm_card_visa (now pm_card_mastercard)"),
    ({"requested_by": "cmd-2"}, "requested_by cmd-1 (now cmd-2)"),
])
def test_same_key_with_another_request_is_refused_and_changes_nothing(
        gateway: TestPaymentGateway, change: dict[str, str], named: str) -> None:
    gateway.charge(request_for("inv-1"))
    before = gateway.charges()
    with pytest.raises(IdempotencyMismatch, match=re.escape(named)):
        gateway.charge(request_for("inv-1", **change))
    assert gateway.charges() == before
    assert gateway.total_succeeded() == Decimal("49.00")


@pytest.mark.parametrize("token, code, message", [
    ("pm_card_chargeDeclined", "card_declined", "Your card was declined."),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds", "Your card has insufficient funds."),
])
def test_decline_tokens_are_declined_and_collect_nothing(
        gateway: TestPaymentGateway, token: str, code: str, message: str) -> None:
    result = gateway.charge(request_for("inv-1", token))
    assert (result.outcome, result.decline_code, result.message) == ("declined", code, message)
    assert not result.ok and result.final
    assert gateway.charge(request_for("inv-1", token)) == result
    assert gateway.total_succeeded() == 0
    assert gateway.cancel("inv-1") == result


def test_3ds_charge_waits_for_the_customer_then_succeeds_on_confirm(gateway: TestPaymentGateway) -> None:
    pending = gateway.charge(request_for("inv-1", "pm_card_authenticationRequired"))
    assert pending.outcome == "action_required" and not pending.final
    assert "3-D Secure" in pending.message
    assert gateway.total_succeeded() == 0
    done = gateway.confirm("inv-1")
    assert done.ok and done.charge_id is not None
    assert gateway.charge(request_for("inv-1", "pm_card_authenticationRequired")) == done
    assert gateway.cancel("inv-1") == done
    assert gateway.total_succeeded() == Decimal("49.00")


def test_3ds_charge_canceled_stays_canceled(gateway: TestPaymentGateway) -> None:
    gateway.charge(request_for("inv-1", "pm_card_authenticationRequired"))
    canceled = gateway.cancel("inv-1")
    assert canceled.outcome == "canceled" and not canceled.ok and canceled.final
    assert gateway.confirm("inv-1") == canceled
    assert gateway.charge(request_for("inv-1", "pm_card_authenticationRequired")) == canceled
    assert gateway.total_succeeded() == 0


def test_cancel_of_an_unknown_key_blocks_any_later_charge_under_it(gateway: TestPaymentGateway) -> None:
    assert gateway.cancel("inv-1") == ChargeResult("canceled")
    assert gateway.charge(request_for("inv-1")).outcome == "canceled"
    assert gateway.charge(request_for("inv-1", amount="12.00")).outcome == "canceled"
    assert [row["outcome"] for row in gateway.charges()] == ["canceled"]
    assert gateway.total_succeeded() == 0


def test_confirm_of_an_unknown_key_is_an_error(gateway: TestPaymentGateway) -> None:
    with pytest.raises(KeyError):
        gateway.confirm("inv-1")


@pytest.mark.parametrize("amount", ["0", "-1.00", "0.0000001"])
def test_non_positive_or_too_precise_amounts_are_refused(gateway: TestPaymentGateway, amount: str) -> None:
    with pytest.raises(ValueError):
        gateway.charge(request_for("inv-1", amount=amount))


def test_amounts_round_trip_exactly_and_sum_exactly(gateway: TestPaymentGateway, gateway_url: str) -> None:
    for key, amount in [("a", "0.01"), ("b", "12345.67"), ("c", "0.1"), ("d", "0.2")]:
        gateway.charge(request_for(key, amount=amount, workspace="ws2" if key == "b" else "ws1"))
    assert [row["amount"] for row in gateway.charges()] == [Decimal(a) for a in ("0.01", "12345.67", "0.1", "0.2")]
    assert gateway.total_succeeded() == Decimal("12345.98")
    assert gateway.total_succeeded("ws1") == Decimal("0.31")
    assert gateway.total_succeeded(currency="USD") == 0


def test_the_documented_sql_counts_real_charges_exactly(gateway: TestPaymentGateway) -> None:
    """docs/payments.md: sum(amount) on PostgreSQL (NUMERIC); integer micro-units on SQLite (text)."""
    gateway.charge(request_for("a", amount="0.10"))
    gateway.charge(request_for("b", amount="0.20"))
    gateway.charge(request_for("c", "pm_card_chargeDeclined", amount="5.00"))
    gateway.charge(request_for("d", "pm_card_authenticationRequired", amount="7.00"))
    engine = create_engine(gateway.tables.url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                total = conn.execute(text(
                    "SELECT sum(amount) FROM test_gateway_charges WHERE outcome='succeeded'")).scalar_one()
            else:
                micro = conn.execute(text(
                    "SELECT sum(CAST(replace(amount, '.', '') AS INTEGER)) FROM test_gateway_charges "
                    "WHERE outcome='succeeded'")).scalar_one()
                total = Decimal(micro).scaleb(-6)
    finally:
        engine.dispose()
    assert total == Decimal("0.30")


def test_an_unreachable_database_is_gateway_unavailable() -> None:
    gateway = TestPaymentGateway("postgresql://postgres@127.0.0.1:1/test?schema=nowhere")
    with pytest.raises(GatewayUnavailable):
        gateway.charge(request_for("inv-1"))
    with pytest.raises(GatewayUnavailable):
        gateway.cancel("inv-1")
    gateway.close()


def gather(workers: list[Any], results: Any) -> list[Any]:
    """Each worker's answers; fails at once when a worker dies instead of answering."""
    seen: list[Any] = []
    while len(seen) < len(workers):
        try:
            seen.append(results.get(timeout=1))
        except queue.Empty:
            if any(worker.exitcode not in (None, 0) for worker in workers):
                pytest.fail("a charging process died (its traceback is above)")
    return seen


def test_processes_charging_the_same_keys_at_once_charge_each_key_once(gateway_url: str) -> None:
    """Real processes on a fresh database (PostgreSQL: a schema not yet created): they race to
    create the table, then on every key, half of them in the opposite order. Four processes
    only: they hold the race of two (one key charged from both ends) and two in the same order
    besides, so a separate two-process run added a process start-up of a few seconds and no race."""
    processes = 4
    keys = [f"inv-{i}" for i in range(20)]
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(processes), spawn.Queue()
    workers = [spawn.Process(target=charge_keys, args=(gateway_url, keys if n % 2 else keys[::-1], start, results))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    seen = gather(workers, results)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert all(each == seen[0] for each in seen)
    gateway = TestPaymentGateway(gateway_url)
    try:
        rows = gateway.charges()
        assert sorted(row["idempotency_key"] for row in rows) == sorted(keys)
        assert {row["idempotency_key"]: row["outcome"] for row in rows} == \
            {key: outcome for key, (outcome, _, _) in seen[0].items()}
        assert {outcome for outcome, _, _ in seen[0].values()} == \
            {"succeeded", "declined", "action_required"}
    finally:
        gateway.close()


def test_a_charges_table_from_before_requested_by_gains_the_column_and_keeps_its_rows(tmp_path: Any) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE test_gateway_charges (idempotency_key VARCHAR(255) PRIMARY KEY, amount VARCHAR, "
                     "currency VARCHAR(16), payment_method VARCHAR(255), workspace_id VARCHAR(255), description TEXT, "
                     "outcome VARCHAR(20) NOT NULL, decline_code VARCHAR(64), charge_id VARCHAR(64), "
                     "created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)")
        conn.execute("INSERT INTO test_gateway_charges VALUES ('old:1', '49.000000', 'EUR', 'pm_card_visa', 'ws1', "
                     "'invoice', 'succeeded', NULL, 'ch_test_old', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    gateway = TestPaymentGateway(f"sqlite:///{db}")
    try:
        assert gateway.charge(request_for("old:1")).charge_id == "ch_test_old", "an old row answers any command"
        assert gateway.charge(request_for("new:1")).ok
        with pytest.raises(IdempotencyMismatch):
            gateway.charge(request_for("new:1", requested_by="cmd-2"))
    finally:
        gateway.close()
