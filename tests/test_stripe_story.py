"""The seed 003 story charged through localstripe on PostgreSQL, its webhooks delivered over
HTTP to the app of `subledger serve`; `stripe reconcile` then finds no difference.

The commands go through Ledger.handle (the HTTP command routes are another part's): what this
pins is the money. A renewal declined at Stripe is recorded when the ledger asks (advance), so
the webhook that reports it later records nothing more."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from adapters.http.app import create_app
from adapters.http.stripe_webhook import events_table
from adapters.stripe_gateway import StripeGateway
from adapters.stripe_reconcile import reconcile
from domain.commands import parse_command
from domain.ledger import TestClock
from tests.conftest import ADMIN, utc
from tests.stripe_fixtures import API_KEY, LocalStripe, localstripe, serving, stripe_env  # noqa: F401


def webhook_outcomes(app: Any, kind: str) -> list[str]:
    return app.state.stripe_events.tables.run(lambda conn: [r.outcome for r in conn.execute(
        events_table.select().where(events_table.c.type == kind))])


@pytest.mark.postgres
def test_the_seed_003_story_on_stripe_leaves_no_difference_to_reconcile(stripe_env: LocalStripe,  # noqa: F811
                                                                         pg_url: str) -> None:
    clock = TestClock(utc("2026-04-01T00:00:00"))
    gateway = StripeGateway(pg_url, API_KEY, stripe_env.url)
    app = create_app(pg_url, catalog="forms", clock=clock, payments=gateway)
    with serving(app) as url:
        stripe_env.register_webhook("story", f"{url}/stripe/webhook")
        ledger = app.state.ledger

        def do(command: str, **args: Any) -> Any:
            return ledger.handle("story", parse_command(command, args), ADMIN)

        assert do("add-payment-method", payment_method="pm_card_visa").ok
        assert do("subscribe", plan="pro").ok
        clock.move_to(utc("2026-04-11T00:00:00"))
        upgrade = do("change-plan", plan="team")
        assert upgrade.ok and upgrade.invoices()[0].amount_due == Decimal("20.00")
        assert do("change-plan", plan="pro").ok  # a downgrade, scheduled (R17)
        assert do("cancel-change").ok  # keep the current plan
        assert do("add-payment-method", payment_method="pm_card_chargeDeclined").ok
        clock.move_to(utc("2026-05-01T00:00:00"))
        ledger.advance()
        sub = ledger.get("story")
        assert (sub.status, sub.plan, len(sub.open_invoices())) == ("past_due", "team", 1)
        assert do("change-plan", plan="pro").error.code == "open_invoice"  # R8
        deadline = time.monotonic() + 20
        while not webhook_outcomes(app, "payment_intent.payment_failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert webhook_outcomes(app, "payment_intent.payment_failed") == ["nothing_pending"]
        assert do("add-payment-method", payment_method="pm_card_visa").ok
        assert do("pay-invoice").ok
        assert do("change-plan", plan="pro").ok
        report = reconcile(ledger, gateway)
    assert report.differences == [] and report.payments == 3
