"""`subledger stripe reconcile`: no difference after real charges; every injected one listed, exit 1."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from adapters.cli import app
from adapters.stripe_gateway import StripeGateway, customers_table
from domain.payments import ChargeRequest
from tests.stripe_fixtures import API_KEY, LocalStripe, localstripe, stripe_env  # noqa: F401

CLOCK = "2026-04-11T00:00:00Z"


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBLEDGER_DB", "sqlite:///unused-placeholder.db")
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", CLOCK)


def cli(db: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--db", db, "--catalog", "forms", *args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def db(stripe_env: LocalStripe, tmp_path: Path) -> str:  # noqa: F811
    url = f"sqlite:///{tmp_path}/ledger.db"
    for ws, method in (("rec1", "pm_card_visa"), ("rec2", "pm_card_chargeDeclined")):
        assert cli(url, "add-payment-method", ws, "--payment-method", method).exit_code == 0
        cli(url, "subscribe", ws, "--plan", "pro")
    return url


def test_reconcile_finds_no_difference_after_a_payment_and_a_decline(db: str) -> None:
    result = cli(db, "stripe", "reconcile", "--json")
    report = json.loads(result.stdout)
    assert "differences" in report, result.output
    assert (result.exit_code, report["differences"]) == (0, [])
    assert report["checked"] == {"payments": 1, "payment_intents": 2}


def test_reconcile_lists_money_stripe_moved_that_the_ledger_never_recorded_and_exits_1(
        db: str, localstripe: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    gateway = StripeGateway(db, API_KEY, localstripe.url)
    stray = gateway.charge(ChargeRequest("rec1:in_rec1_0099:1", "rec1", "pm_card_visa", Decimal("7.00"), "USD", "x"))
    gateway.close()
    assert stray.ok
    result = cli(db, "stripe", "reconcile", "--workspace", "rec1")
    assert result.exit_code == 1
    assert "rec1 in_rec1_0099: missing_in_ledger: Stripe collected 7.00 USD" in result.stdout
    assert "1 difference: " in result.stdout


def test_a_payment_deleted_from_the_events_by_hand_is_money_stripe_moved_that_the_ledger_lost(db: str) -> None:
    """The workspace's history no longer folds (event_chain_broken): reconcile stopped there, the
    one time it matters. Its facts are compared as they stand."""
    from tests.test_tamper_evidence import StoredEvents
    assert cli(db, "set-members", "rec1", "--members", "2").exit_code == 0
    stored = StoredEvents(db)
    stored.delete("rec1", stored.version_of("rec1", "PaymentSucceeded"))
    stored.engine.dispose()
    result = cli(db, "stripe", "reconcile")
    assert result.exit_code == 1, result.output
    assert "rec1 in_rec1_0001: missing_in_ledger: Stripe collected 19.00 USD" in result.stdout


def test_a_charge_declined_at_stripe_but_pending_in_the_ledger_is_unsettled(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process died after Stripe declined the card, before the decline was recorded: Stripe
    leaves the PaymentIntent `requires_payment_method`, which reconcile took for still open."""
    charge = StripeGateway.charge

    def dies_after(self: StripeGateway, *args: Any, **kwargs: Any) -> Any:
        charge(self, *args, **kwargs)
        raise KeyboardInterrupt  # the process is gone before it records the outcome

    assert cli(db, "add-payment-method", "rec1", "--payment-method", "pm_card_chargeDeclined").exit_code == 0
    monkeypatch.setattr(StripeGateway, "charge", dies_after)
    cli(db, "change-plan", "rec1", "--plan", "team")
    monkeypatch.setattr(StripeGateway, "charge", charge)
    result = cli(db, "stripe", "reconcile", "--json", "--workspace", "rec1")
    report = json.loads(result.stdout)
    assert "differences" in report, result.output
    assert [(d["kind"], d["detail"].split(":")[0]) for d in report["differences"]] == [
        ("unsettled", "pending in the ledger, declined at Stripe")]


def test_a_payment_refunded_at_stripe_is_money_taken_back_that_the_ledger_counts_as_paid(
        db: str, localstripe: LocalStripe) -> None:  # noqa: F811
    """A refund made in Stripe's dashboard: reconcile found nothing, the ledger still says paid in full."""
    gateway = StripeGateway(db, API_KEY, localstripe.url)
    mine = gateway.tables.run(lambda conn: [r[0] for r in conn.execute(select(customers_table.c.customer_id))])
    (paid,) = [pi for pi in gateway.payment_intents(mine) if pi["status"] == "succeeded"]
    gateway.client.v1.refunds.create({"payment_intent": paid["id"], "amount": 500})
    gateway.close()
    result = cli(db, "stripe", "reconcile", "--workspace", "rec1")
    assert result.exit_code == 1, result.output
    assert ("rec1 in_rec1_0001: taken_back: Stripe holds 14.00 USD of the 19.00 USD the ledger records as paid "
            "(5.00 USD refunded); the ledger records no refunds or disputes") in result.stdout


def test_a_duplicate_charge_refunded_in_full_is_settled(db: str, localstripe: LocalStripe) -> None:  # noqa: F811
    """Refunding the duplicate, the fix for a double charge, read as money taken back from the paid invoice."""
    gateway = StripeGateway(db, API_KEY, localstripe.url)
    extra = gateway.charge(ChargeRequest("rec1:in_rec1_0001:9", "rec1", "pm_card_visa", Decimal("19.00"), "USD", "x"))
    assert extra.ok
    assert "double_charge" in cli(db, "stripe", "reconcile", "--workspace", "rec1").stdout
    (intent,) = [pi for pi in gateway.payment_intents() if pi["metadata"]["charge_key"] == "rec1:in_rec1_0001:9"]
    gateway.client.v1.refunds.create({"payment_intent": intent["id"]})
    gateway.close()
    result = cli(db, "stripe", "reconcile", "--workspace", "rec1")
    assert result.exit_code == 0 and "no differences" in result.stdout, result.stdout


@pytest.mark.parametrize(("status", "held"), [(None, "0.00"), ("needs_response", "0.00"), ("lost", "0.00"),
                                              ("won", "19.00"), ("warning_needs_response", "19.00")])
def test_a_dispute_takes_the_money_back_only_while_it_holds_it(status: str | None, held: str) -> None:
    """localstripe opens no disputes: the charge as Stripe's API gives it, expanded on the PaymentIntent."""
    from adapters.stripe_reconcile import still_held
    intent = {"amount": 1900, "currency": "usd", "dispute_status": status,
              "latest_charge": {"id": "ch_1", "amount": 1900, "amount_refunded": 0, "disputed": True}}
    assert still_held(intent)[0] == Decimal(held)


@pytest.mark.parametrize(("count", "said"), [(0, "no differences"), (1, "1 difference"), (10, "10 differences")])
def test_reconcile_counts_its_differences_in_words(count: int, said: str) -> None:
    """Ten differences read "1no differences": the count was made by replacing "0 differences"."""
    from domain.text import plural
    assert plural(count, "difference", none="no differences") == said


def test_reconcile_needs_the_stripe_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBLEDGER_PAYMENTS", "test")
    result = cli(f"sqlite:///{tmp_path}/t.db", "stripe", "reconcile")
    assert result.exit_code == 2 and "SUBLEDGER_PAYMENTS=stripe" in result.stderr
