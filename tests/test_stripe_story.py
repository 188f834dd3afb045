"""The seed 003 story over real HTTP (httpx to the app of `subledger serve`) on PostgreSQL,
charged through localstripe, whose webhooks are delivered over HTTP to the same app; `stripe
reconcile` then finds no difference. A renewal declined at Stripe is recorded when the ledger
asks (the test clock's advance), so the webhook that reports it later records nothing more."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from adapters.http.app import create_app
from adapters.http.stripe_webhook import events_table
from adapters.stripe_gateway import StripeGateway
from adapters.stripe_reconcile import reconcile
from domain.ledger import TestClock
from tests.conftest import utc
from tests.stripe_fixtures import API_KEY, LocalStripe, localstripe, serving, stripe_env  # noqa: F401


def webhook_outcomes(app: Any, kind: str) -> list[str]:
    return app.state.stripe_events.tables.run(lambda conn: [r.outcome for r in conn.execute(
        events_table.select().where(events_table.c.type == kind))])


@pytest.mark.postgres
def test_the_seed_003_story_over_http_on_stripe_leaves_no_difference_to_reconcile(  # noqa: F811
        stripe_env: LocalStripe, pg_url: str) -> None:
    gateway = StripeGateway(pg_url, API_KEY, stripe_env.url)
    app = create_app(pg_url, catalog="forms", clock=TestClock(utc("2026-04-01T00:00:00")), payments=gateway)
    with serving(app) as url:
        stripe_env.register_webhook("story", f"{url}/stripe/webhook")
        admin = app.state.tokens.create("admin", "story")[1]
        operator = app.state.tokens.create("operator", None)[1]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:

            def do(command: str, body: dict[str, Any] | None = None) -> Any:
                return http.post(f"/v1/workspaces/story/{command}", json=body or {})

            def advance(to: str) -> None:
                assert http.post("/v1/test-clock/advance", json={"to": to},
                                 headers={"Authorization": f"Bearer {operator}"}).status_code == 200

            assert do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
            assert do("subscribe", {"plan": "pro"}).status_code == 200
            advance("2026-04-11T00:00:00Z")
            quote = http.post("/v1/workspaces/story/preview/change-plan", json={"plan": "team"}).json()["quote"]["id"]
            upgrade = do("change-plan", {"plan": "team", "quote": quote})
            assert upgrade.json()["invoices"][0]["amount_due"] == "20.00"
            assert do("change-plan", {"plan": "pro"}).json()["state"]["scheduled_change"]["kind"] == "downgrade"
            assert do("cancel-change").json()["state"]["scheduled_change"] is None
            do("add-payment-method", {"payment_method": "pm_card_chargeDeclined"})
            advance("2026-05-01T00:00:00Z")
            refused = do("change-plan", {"plan": "pro"})
            assert (refused.status_code, refused.json()["code"]) == (409, "open_invoice")  # R8
            deadline = time.monotonic() + 20
            while not webhook_outcomes(app, "payment_intent.payment_failed") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert webhook_outcomes(app, "payment_intent.payment_failed") == ["nothing_pending"]
            do("add-payment-method", {"payment_method": "pm_card_visa"})
            assert do("pay-invoice").json()["state"]["open_invoice"] is None
            assert do("change-plan", {"plan": "pro"}).status_code == 200
        report = reconcile(app.state.ledger, gateway)
    assert report.differences == [] and report.payments == 3
