"""Amounts as Stripe takes them, against localstripe: cents, units of a zero-decimal currency,
thousandths of a three-decimal one (KWD), which Stripe charges only in multiples of ten. A KWD
amount went to Stripe at a tenth of its value (19.120 as 1912), and `stripe reconcile`, reading
it back the same way, agreed."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.app import build_ledger
from adapters.stripe_gateway import StripeGateway, from_minor_units, minor_units
from adapters.stripe_reconcile import reconcile
from domain.commands import parse_command
from domain.ledger import Ledger, TestClock
from tests.conftest import ADMIN, utc
from tests.stripe_fixtures import localstripe, stripe_gateway  # noqa: F401

FORMS = Path(__file__).resolve().parent.parent / "domain" / "catalogs" / "forms.toml"


@pytest.mark.parametrize(("amount", "currency", "units"), [("19.00", "USD", 1900), ("500", "JPY", 500),
                                                           ("19.120", "KWD", 19120), ("0.010", "KWD", 10)])
def test_an_amount_goes_to_stripe_in_the_currencys_minor_units_and_comes_back_the_same(
        amount: str, currency: str, units: int) -> None:
    assert minor_units(Decimal(amount), currency) == units
    assert from_minor_units(units, currency.lower()) == Decimal(amount)


def kwd_ledger(gateway: StripeGateway, tmp_path: Path, pro: str) -> Ledger:
    text = FORMS.read_text().replace('id = "forms"', 'id = "forms-kwd"').replace('currency = "USD"', 'currency = "KWD"')
    catalog = tmp_path / "kwd.toml"
    catalog.write_text(text.replace('month = "19.00"', f'month = "{pro}"'))
    return build_ledger(f"sqlite:///{tmp_path}/ledger.db", catalog=catalog,
                        clock=TestClock(utc("2026-04-11T00:00:00")), payments=gateway)


@pytest.fixture
def on_kwd(stripe_gateway: StripeGateway, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    made: list[Ledger] = []

    def make(pro: str) -> Ledger:
        made.append(kwd_ledger(stripe_gateway, tmp_path, pro))
        return made[-1]

    yield make
    for ledger in made:
        ledger.close()


def do(ledger: Ledger, ws: str, command: str, **args: Any) -> Any:
    return ledger.handle(ws, parse_command(command, args), ADMIN)


def test_a_kwd_charge_is_collected_in_thousandths_and_reconciles(on_kwd: Any, stripe_gateway: StripeGateway) -> None:  # noqa: F811
    ledger = on_kwd("19.120")
    do(ledger, "k2", "add-payment-method", payment_method="pm_card_visa")
    assert do(ledger, "k2", "subscribe", plan="pro", interval="month").ok
    (intent,) = stripe_gateway.payment_intents([stripe_gateway._customer("k2")])
    assert (intent["amount"], intent["currency"]) == (19120, "kwd")
    assert reconcile(ledger, stripe_gateway, "k2").differences == []


def test_a_kwd_amount_stripe_cannot_charge_is_declined_before_anything_is_sent(
        on_kwd: Any, stripe_gateway: StripeGateway) -> None:  # noqa: F811
    """19.125 KWD raised deep in the gateway: the charge stayed pending and every later command
    on the workspace failed with an internal error."""
    ledger = on_kwd("19.125")
    do(ledger, "k1", "add-payment-method", payment_method="pm_card_visa")
    refused = do(ledger, "k1", "subscribe", plan="pro", interval="month")
    assert refused.error.code == "payment_failed"
    assert "payment of 19.125 declined (amount_not_chargeable)" in refused.error.message
    assert ledger.get("k1").pending_charges == {} and ledger.get("k1").plan is None
    assert list(stripe_gateway.payment_intents([stripe_gateway._customer("k1")])) == []
    assert do(ledger, "k1", "add-payment-method", payment_method="pm_card_mastercard").ok
