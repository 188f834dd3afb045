"""`POST /stripe/webhook`: signed and recent or refused (400, nothing recorded); deduplicated by
event id; an outcome comes from the gateway, so repeated and out-of-order events record nothing new."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.http.app import create_app
from adapters.stripe_gateway import StripeGateway
from domain.commands import parse_command
from domain.ledger import TestClock
from tests.conftest import ADMIN, utc
from tests.stripe_fixtures import (  # noqa: F401
    LocalStripe, localstripe, serving, signed, stripe_env, stripe_gateway,
)


def event(kind: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": kind, "data": {"object": obj}}


@pytest.fixture
def api(stripe_env: LocalStripe, stripe_gateway: StripeGateway, tmp_path: Path) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(f"sqlite:///{tmp_path}/ledger.db", clock=TestClock(utc("2026-04-11T00:00:00")),
                     payments=stripe_gateway)
    with TestClient(app) as client:
        yield client


def do(client: TestClient, command: str, ws: str = "ws", **args: Any) -> Any:
    return client.app.state.ledger.handle(ws, parse_command(command, args), ADMIN)  # type: ignore[attr-defined]


def recorded(client: TestClient, ws: str = "ws") -> list[str]:
    return [type(e).__name__ for e in client.app.state.ledger.workspace_events(ws)]  # type: ignore[attr-defined]


def seen(client: TestClient) -> list[str]:
    from adapters.http.stripe_webhook import events_table
    return client.app.state.stripe_events.tables.run(  # type: ignore[attr-defined]
        lambda conn: [r.event_id for r in conn.execute(events_table.select())])


@pytest.mark.parametrize("problem", ["forged", "stale", "future", "unsigned"])
def test_a_forged_stale_future_or_unsigned_webhook_is_refused_with_400_and_nothing_recorded(
        api: TestClient, problem: str) -> None:
    now = time.time()
    body = {"forged": signed(event("invoice.paid", {}), secret="whsec_someone_else"),
            "stale": signed(event("invoice.paid", {}), at=now - 330),
            "future": signed(event("invoice.paid", {}), at=now + 330),
            "unsigned": {"content": json.dumps(event("invoice.paid", {}))}}[problem]
    response = api.post("/stripe/webhook", **body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "without_verification" not in response.json()["detail"]  # stripe-python's advice to a developer
    assert seen(api) == []


@pytest.mark.parametrize("body", [
    {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": "x"}},
    {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1", "metadata": "x"}}},
    {"id": "evt_1", "type": "payment_intent.succeeded", "data": [1]},
    {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"payment_intent": 7}}},
    {"id": "e" * 300, "type": "invoice.paid", "data": {"object": {}}},
    {"id": "evt_\u0000", "type": "invoice.paid", "data": {"object": {}}},  # PostgreSQL cannot store a NUL: was a 500
    {"id": "evt_1", "type": "invoice.paid\u202e", "data": {"object": {}}},
    [1],
])
def test_a_signed_body_of_another_shape_is_refused_400_never_an_internal_error(api: TestClient, body: Any) -> None:
    response = api.post("/stripe/webhook", **signed(body))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert response.json()["detail"].startswith("the body is not a Stripe event")
    assert seen(api) == []


def test_a_signature_a_little_in_the_future_is_accepted_and_an_unknown_type_acknowledged(api: TestClient) -> None:
    response = api.post("/stripe/webhook", **signed(event("balance.available", {}), at=time.time() + 200))
    assert (response.status_code, response.json()["outcome"]) == (200, "ignored")


def test_a_repeated_event_is_answered_once_as_a_duplicate(api: TestClient) -> None:
    first = api.post("/stripe/webhook", **signed(event("customer.subscription.updated", {"id": "sub_1"})))
    again = api.post("/stripe/webhook", **signed(event("customer.subscription.updated", {"id": "sub_1"})))
    assert first.json()["outcome"] == "not_mirrored"
    assert again.json() | {"first": None} == {"received": True, "event": "evt_1", "outcome": "duplicate",
                                              "first": None}
    assert seen(api) == ["evt_1"]


def test_an_outcome_already_recorded_or_out_of_order_records_nothing_new(api: TestClient,
                                                                       stripe_gateway: StripeGateway) -> None:
    do(api, "add-payment-method", payment_method="pm_card_visa")
    assert do(api, "subscribe", plan="pro").ok
    before = recorded(api)
    [intent] = stripe_gateway.payment_intents([stripe_gateway._customer("ws")])
    late_failure = api.post("/stripe/webhook", **signed(event("payment_intent.payment_failed", intent, "evt_a")))
    success = api.post("/stripe/webhook", **signed(event("payment_intent.succeeded", intent, "evt_b")))
    unknown = api.post("/stripe/webhook", **signed(event("payment_intent.succeeded", intent | {"id": "pi_nope"},
                                                          "evt_c")))
    assert [r.json()["outcome"] for r in (late_failure, success, unknown)] == ["nothing_pending"] * 3
    assert recorded(api) == before


@pytest.fixture
def served(stripe_env: LocalStripe, stripe_gateway: StripeGateway, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    """`subledger serve`'s app on a free port, localstripe's webhooks pointed at it."""
    app = create_app(f"sqlite:///{tmp_path}/ledger.db", clock=TestClock(utc("2026-04-11T00:00:00")),
                     payments=stripe_gateway)
    with serving(app) as url:
        stripe_env.register_webhook("subledger-tests", f"{url}/stripe/webhook")
        yield app


def test_a_3ds_charge_completed_by_the_customer_is_recorded_from_localstripes_webhook(
        served: Any, stripe_env: LocalStripe, stripe_gateway: StripeGateway) -> None:  # noqa: F811
    ledger = served.state.ledger
    ledger.handle("hook", parse_command("add-payment-method", {"payment_method": "pm_card_authenticationRequired"}),
                  ADMIN)
    assert ledger.handle("hook", parse_command("subscribe", {"plan": "pro"}), ADMIN).error.code == \
        "payment_action_required"
    reference = ledger.get("hook").pending_charges["in_hook_0001"]["provider_reference"]
    stripe_env.authenticate(stripe_gateway.retrieve(reference))
    deadline = time.monotonic() + 20
    while ledger.get("hook").pending_charges and time.monotonic() < deadline:
        time.sleep(0.1)
    paid = [e for e in ledger.workspace_events("hook") if type(e).__name__ == "PaymentSucceeded"]
    assert [(e.invoice_id, e.channel) for e in paid] == [("in_hook_0001", "billing_provider")]
    assert ledger.get("hook").plan == "pro"


@pytest.mark.parametrize(("kind", "completed", "fact"), [("invoice.paid", True, "PaymentSucceeded"),
                                                         ("payment_intent.payment_failed", False, "ChargeDeclined")])
def test_a_webhook_records_the_outcome_the_gateway_reports_on_channel_billing_provider(
        api: TestClient, stripe_env: LocalStripe, stripe_gateway: StripeGateway,  # noqa: F811
        kind: str, completed: bool, fact: str) -> None:
    do(api, "add-payment-method", payment_method="pm_card_authenticationRequired")
    assert do(api, "subscribe", plan="pro").error.code == "payment_action_required"
    reference = api.app.state.ledger.get("ws").pending_charges["in_ws_0001"]["provider_reference"]  # type: ignore
    waiting = api.post("/stripe/webhook", **signed(event("payment_intent.requires_action", {
        "id": reference, "metadata": {"workspace": "ws"}}, "evt_wait")))
    assert waiting.json()["outcome"] == "still_pending"
    stripe_env.authenticate(stripe_gateway.retrieve(reference), success=completed)
    obj = {"id": "in_stripe_1", "payment_intent": reference} if kind.startswith("invoice.") else \
        {"id": reference, "metadata": {"workspace": "ws"}}
    response = api.post("/stripe/webhook", **signed(event(kind, obj, "evt_done")))
    assert response.json()["outcome"].startswith("recorded: ") and response.json()["outcome"].endswith(fact)
    [outcome] = [e for e in api.app.state.ledger.workspace_events("ws") if type(e).__name__ == fact]  # type: ignore
    assert (outcome.channel, outcome.actor_id) == ("billing_provider", ADMIN.id)
    assert seen(api) == ["evt_done"]
