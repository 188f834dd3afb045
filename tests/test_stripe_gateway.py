"""The Stripe gateway through Ledger.handle, against localstripe (tests/stripe_fixtures.py).

localstripe ignores Idempotency-Key, so these tests pin the two steps: the PaymentIntent's id
is recorded (ChargeSubmitted) before it is confirmed, and a retry or a recovery uses that one.

What localstripe lacks, and where that path is covered instead: PaymentIntent search and
`list(customer=...)` (the gateway lists all and filters: tests/test_stripe_reconcile.py); a card
declined `insufficient_funds` on a PaymentIntent (localstripe declines 9995 at attach, as
`card_declined`: the decline code path is the test gateway's, tests/test_test_gateway.py);
asynchronous `processing` card payments (no outcome yet, like an unreachable provider, below)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.app import build_ledger
from adapters.stripe_gateway import StripeGateway
from domain.commands import parse_command
from domain.errors import LedgerError
from domain.ledger import Ledger, TestClock
from domain.payments import ChargeRequest, IdempotencyMismatch
from tests.conftest import ADMIN, utc
from tests.stripe_fixtures import API_KEY, LocalStripe, localstripe, stripe_gateway  # noqa: F401

THREE_DS = "pm_card_authenticationRequired"


@pytest.fixture
def ledger(stripe_gateway: StripeGateway, tmp_path: Path) -> Iterator[Ledger]:
    made = build_ledger(f"sqlite:///{tmp_path}/ledger.db", catalog="forms",
                        clock=TestClock(utc("2026-04-11T00:00:00")), payments=stripe_gateway)
    yield made
    made.close()


def do(ledger: Ledger, command: str, ws: str = "ws", **args: Any) -> Any:
    return ledger.handle(ws, parse_command(command, args), ADMIN)


def types(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def intents(gateway: StripeGateway, ws: str = "ws") -> list[Any]:
    """This ledger's PaymentIntents for `ws` (one localstripe serves the whole session)."""
    return list(gateway.payment_intents([gateway._customer(ws)]))


def reference(ledger: Ledger, ws: str = "ws") -> str:
    return [e for e in ledger.workspace_events(ws) if type(e).__name__ == "ChargeSubmitted"][-1].provider_reference


def test_a_charge_succeeds_and_its_payment_intent_id_is_recorded_before_it_is_confirmed(
        ledger: Ledger, stripe_gateway: StripeGateway) -> None:
    do(ledger, "add-payment-method", payment_method="pm_card_visa")
    result = do(ledger, "subscribe", plan="pro")
    assert result.ok, result.error
    assert types(result.events)[:2] == ["ChargeRequested", "ChargeSubmitted"]
    assert types(result.events)[-1] == "PaymentSucceeded"
    [intent] = intents(stripe_gateway)
    assert intent["id"] == reference(ledger)
    assert (intent["status"], intent["amount"], intent["currency"]) == ("succeeded", 1900, "usd")
    assert result.events[-1].charge_id == intent["latest_charge"]["id"]
    assert ledger.get("ws").plan == "pro"


def test_R12_a_declined_charge_leaves_the_plan_unchanged(ledger: Ledger, stripe_gateway: StripeGateway) -> None:
    do(ledger, "add-payment-method", payment_method="pm_card_visa")
    assert do(ledger, "subscribe", plan="pro").ok
    do(ledger, "add-payment-method", payment_method="pm_card_chargeDeclined")
    result = do(ledger, "change-plan", plan="team")
    assert result.error.code == "payment_failed"
    assert "UpgradePaymentFailed" in types(result.events)
    assert ledger.get("ws").plan == "pro"
    assert [pi["status"] for pi in intents(stripe_gateway)] == ["succeeded", "requires_payment_method"]


def test_R12_a_card_declined_when_attached_makes_no_payment_intent(ledger: Ledger,
                                                                    stripe_gateway: StripeGateway) -> None:
    """localstripe declines 4000000000009995 (pm_card_chargeDeclinedInsufficientFunds) at attach."""
    do(ledger, "add-payment-method", payment_method="pm_card_chargeDeclinedInsufficientFunds")
    result = do(ledger, "subscribe", plan="pro")
    assert result.error.code == "payment_failed"
    assert "ChargeSubmitted" not in types(result.events)
    assert intents(stripe_gateway) == []


def test_requires_action_is_payment_action_required_and_abandoning_cancels_the_payment_intent(
        ledger: Ledger, stripe_gateway: StripeGateway) -> None:
    do(ledger, "add-payment-method", payment_method=THREE_DS)
    result = do(ledger, "subscribe", plan="pro")
    assert result.error.code == "payment_action_required"
    assert [pi["status"] for pi in intents(stripe_gateway)] == ["requires_action"]
    ledger.abandon_payment("ws")
    assert [pi["status"] for pi in intents(stripe_gateway)] == ["canceled"]
    assert ledger.get("ws").pending_charges == {}


def test_a_customer_authenticating_just_as_the_ledger_abandons_is_recorded_as_paid(
        ledger: Ledger, stripe_gateway: StripeGateway, localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Stripe refuses to cancel a PaymentIntent that succeeded after the ledger read it: the
    outcome is read again and recorded, where the abandon used to fail and leave it pending."""
    do(ledger, "add-payment-method", payment_method=THREE_DS)
    assert do(ledger, "subscribe", plan="pro").error.code == "payment_action_required"
    intents_api = stripe_gateway.client.v1.payment_intents
    cancel = intents_api.cancel

    def authenticated_first(reference: str, *args: Any, **kwargs: Any) -> Any:
        localstripe.authenticate(intents_api.retrieve(reference))
        return cancel(reference, *args, **kwargs)

    monkeypatch.setattr(intents_api, "cancel", authenticated_first)
    events = ledger.abandon_payment("ws")
    assert "PaymentSucceeded" in types(events)
    assert ledger.get("ws").pending_charges == {} and ledger.get("ws").plan == "pro"
    assert [pi["status"] for pi in intents(stripe_gateway)] == ["succeeded"]


def test_a_cancel_stripe_refuses_for_another_reason_leaves_the_charge_pending_and_says_so(
        ledger: Ledger, stripe_gateway: StripeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import stripe

    do(ledger, "add-payment-method", payment_method=THREE_DS)
    assert do(ledger, "subscribe", plan="pro").error.code == "payment_action_required"

    def refused(reference: str, *args: Any, **kwargs: Any) -> Any:
        raise stripe.InvalidRequestError("unexpected state", None, code="payment_intent_unexpected_state",
                                         http_status=400)

    monkeypatch.setattr(stripe_gateway.client.v1.payment_intents, "cancel", refused)
    with pytest.raises(LedgerError) as pending:
        ledger.abandon_payment("ws")
    assert pending.value.code == "payment_pending"
    assert ledger.get("ws").pending_charges and [pi["status"] for pi in intents(stripe_gateway)] == ["requires_action"]


class Dies(StripeGateway):
    """The process dies after the PaymentIntent's id is recorded: before confirming it, or
    after confirming it and before the outcome is recorded."""

    dead = True
    confirmed_first = False

    def charge(self, request: ChargeRequest, reference: str | None = None) -> Any:
        if self.dead and not self.confirmed_first:
            raise KeyboardInterrupt("killed")
        result = super().charge(request, reference)
        if self.dead:
            raise KeyboardInterrupt("killed")
        return result


@pytest.mark.parametrize("confirmed_first", [False, True], ids=["before_confirm", "after_confirm"])
def test_a_crash_after_submit_then_resolve_charges_once(localstripe: LocalStripe, tmp_path: Path,  # noqa: F811
                                                        confirmed_first: bool) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    gateway = Dies(url, API_KEY, localstripe.url)
    gateway.confirmed_first = confirmed_first
    ledger = build_ledger(url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")), payments=gateway)
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        with pytest.raises(KeyboardInterrupt):
            do(ledger, "subscribe", plan="pro")
        assert [pi["status"] for pi in intents(gateway)] == ["succeeded" if confirmed_first else "requires_confirmation"]
        gateway.dead = False
        ledger.resolve_payments("ws")
        ledger.resolve_payments("ws")
        assert [pi["status"] for pi in intents(gateway)] == ["succeeded"]
        assert types(ledger.workspace_events("ws")).count("PaymentSucceeded") == 1
        assert ledger.get("ws").plan == "pro"
    finally:
        ledger.close()


def test_asking_again_never_creates_a_second_payment_intent(ledger: Ledger, stripe_gateway: StripeGateway) -> None:
    """localstripe ignores Idempotency-Key: the recorded id is what keeps a retry to one charge."""
    do(ledger, "add-payment-method", payment_method="pm_card_visa")
    assert do(ledger, "subscribe", plan="pro").ok
    pending = {"charge_key": "ws:in_ws_0001:1", "amount": Decimal("19.00")}
    request = ChargeRequest(pending["charge_key"], "ws", "pm_card_visa", pending["amount"], "USD", "subscribe")
    again = stripe_gateway.charge(request, reference(ledger))
    assert again.ok and len(intents(stripe_gateway)) == 1
    with pytest.raises(IdempotencyMismatch):
        stripe_gateway.charge(ChargeRequest(request.idempotency_key, "ws", "pm_card_visa", Decimal("20.00"), "USD",
                                            "subscribe"), reference(ledger))
    recorded_by = next(e.command_id for e in ledger.workspace_events("ws") if type(e).__name__ == "ChargeRequested")
    same = ChargeRequest(request.idempotency_key, "ws", "pm_card_visa", Decimal("19.00"), "USD", "subscribe",
                         requested_by=recorded_by)
    assert stripe_gateway.charge(same, reference(ledger)).ok
    with pytest.raises(IdempotencyMismatch, match="requested_by"):
        stripe_gateway.charge(ChargeRequest(request.idempotency_key, "ws", "pm_card_visa", Decimal("19.00"), "USD",
                                            "subscribe", requested_by="another-command"), reference(ledger))


def test_localstripe_ignores_the_idempotency_key_so_one_step_charges_would_double(
        stripe_gateway: StripeGateway) -> None:
    """Why the two steps: the same key twice makes two PaymentIntents on localstripe."""
    request = ChargeRequest("dup:in_dup_0001:1", "dup", "pm_card_visa", Decimal("5.00"), "EUR", "test")
    assert stripe_gateway.charge(request).ok and stripe_gateway.charge(request).ok
    assert len(intents(stripe_gateway, "dup")) == 2


@pytest.mark.postgres
def test_on_postgres_the_gateway_keeps_its_customers_in_the_ledgers_schema_and_charges_once(
        localstripe: LocalStripe, pg_url: str) -> None:  # noqa: F811
    gateway = StripeGateway(pg_url, API_KEY, localstripe.url)
    ledger = build_ledger(pg_url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")), payments=gateway)
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        assert do(ledger, "subscribe", plan="pro").ok
        assert ledger.resolve_payments() == {}
        assert [(pi["id"], pi["status"]) for pi in intents(gateway)] == [(reference(ledger), "succeeded")]
    finally:
        ledger.close()


def test_an_unreachable_stripe_leaves_the_charge_pending_and_resolve_later_charges_once(
        localstripe: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    from tests.stripe_fixtures import free_port
    url = f"sqlite:///{tmp_path}/ledger.db"
    down = StripeGateway(url, API_KEY, f"http://127.0.0.1:{free_port()}")
    ledger = build_ledger(url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")), payments=down)
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        assert do(ledger, "subscribe", plan="pro").error.code == "payment_pending"
        assert list(ledger.get("ws").pending_charges) == ["in_ws_0001"]
        ledger.payments = up = StripeGateway(url, API_KEY, localstripe.url)
        ledger.resolve_payments("ws")
        assert [pi["status"] for pi in intents(up)] == ["succeeded"]
        assert ledger.get("ws").plan == "pro"
    finally:
        down.close()
        ledger.close()


class Down(StripeGateway):
    def submit(self, request: ChargeRequest) -> Any:
        from domain.payments import GatewayUnavailable
        raise GatewayUnavailable("Stripe did not answer")


@pytest.mark.postgres
def test_four_processes_settling_one_charge_confirm_one_payment_intent(localstripe: LocalStripe,  # noqa: F811
                                                                       pg_url: str) -> None:
    """Racing submits may each create a PaymentIntent; one id is recorded, only that one is
    confirmed, the others stay unconfirmed (no money): one payment, recorded once."""
    import multiprocessing

    from tests.stripe_worker import resolve
    ledger = build_ledger(pg_url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")),
                          payments=Down(pg_url, API_KEY, localstripe.url))
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        assert do(ledger, "subscribe", plan="pro").error.code == "payment_pending"
        spawn = multiprocessing.get_context("spawn")
        start, results = spawn.Barrier(4), spawn.Queue()
        workers = [spawn.Process(target=resolve, args=(pg_url, localstripe.url, start, results)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert [w.exitcode for w in workers] == [0] * 4
        paid = [e for e in ledger.workspace_events("ws") if type(e).__name__ == "PaymentSucceeded"]
        made = intents(ledger.payments)  # type: ignore[arg-type]
        assert [pi["id"] for pi in made if pi["status"] == "succeeded"] == [reference(ledger)]
        assert {pi["status"] for pi in made} <= {"succeeded", "requires_confirmation"}
        assert len(paid) == 1 and paid[0].amount == Decimal("19.00")
    finally:
        ledger.close()


class Forgetful(StripeGateway):
    """Stripe lost the PaymentIntent the ledger recorded (as when localstripe restarts from scratch)."""

    def submit(self, request: ChargeRequest) -> Any:
        return "pi_unknown_at_stripe"


def test_a_recorded_payment_intent_stripe_does_not_know_leaves_the_charge_pending_and_reconcile_says_so(
        localstripe: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    from adapters.stripe_reconcile import reconcile
    url = f"sqlite:///{tmp_path}/ledger.db"
    gateway = Forgetful(url, API_KEY, localstripe.url)
    ledger = build_ledger(url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")), payments=gateway)
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        assert do(ledger, "subscribe", plan="pro").error.code == "payment_pending"
        [difference] = reconcile(ledger, gateway).differences
        assert (difference.kind, difference.payment_intent) == ("missing_at_stripe", "pi_unknown_at_stripe")
    finally:
        ledger.close()


def test_a_process_missing_the_stripe_settings_is_refused_and_settles_nothing(
        localstripe: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    """A ledger whose charges went to Stripe records so; a process on the test gateway (a job
    started without SUBLEDGER_PAYMENTS=stripe) is refused before it asks anything of its own
    gateway: the pending Stripe charge stays pending, and no new charge is made anywhere."""
    from adapters.payments import TestPaymentGateway
    from domain.errors import LedgerError
    from tests.stripe_fixtures import free_port
    url = f"sqlite:///{tmp_path}/ledger.db"
    down = StripeGateway(url, API_KEY, f"http://127.0.0.1:{free_port()}")
    ledger = build_ledger(url, catalog="forms", clock=TestClock(utc("2026-04-11T00:00:00")), payments=down)
    test_gateway = TestPaymentGateway(url)
    forgot = build_ledger(url, catalog="forms", clock=TestClock(utc("2026-04-12T00:00:00")), payments=test_gateway)
    try:
        do(ledger, "add-payment-method", payment_method="pm_card_visa")
        assert do(ledger, "subscribe", plan="pro").error.code == "payment_pending"
        for attempt in (lambda: forgot.resolve_payments("ws"), lambda: forgot.abandon_payment("ws"),
                        lambda: forgot.advance(), lambda: forgot.settle_reported("ws", "pi_any"), lambda: do(forgot, "add-payment-method", "ws2",
                                                              payment_method="pm_card_visa")):
            with pytest.raises(LedgerError) as refused:
                attempt()
            assert refused.value.code == "payments_conflict" and "SUBLEDGER_PAYMENTS=stripe" in refused.value.message
        assert forgot.get("ws2") is None
        assert list(ledger.get("ws").pending_charges) == ["in_ws_0001"]
        assert test_gateway.charges("ws") == [] and test_gateway.charges("ws2") == []
    finally:
        for closing in (down, test_gateway, ledger, forgot):
            closing.close()


def test_a_stripe_ledger_from_before_the_gateway_was_recorded_is_known_as_one_at_its_upgrade(
        localstripe: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    """A store written by a version that recorded no gateway (its writer here has no `kind`)
    and set up at event store version 5: the upgrade reads Stripe's customers table and records
    the Stripe gateway, so the first test-gateway process after it is refused, not recorded."""
    from sqlalchemy import create_engine, text

    from adapters.payments import TestPaymentGateway
    from adapters.settings import eventsourcing_env
    from domain.errors import LedgerError
    from projections.store import sqlalchemy_url
    from tests.stripe_fixtures import free_port

    class Unrecorded(StripeGateway):
        kind = None  # type: ignore[assignment]  # as gateways were before they had a kind

    url = f"sqlite:///{tmp_path}/ledger.db"
    up, down = Unrecorded(url, API_KEY, localstripe.url), Unrecorded(url, API_KEY, f"http://127.0.0.1:{free_port()}")
    ledger = build_ledger(url, catalog="workspace", clock=TestClock(utc("2026-04-11T00:00:00")), payments=up)
    do(ledger, "add-payment-method", payment_method="pm_card_visa")
    assert do(ledger, "subscribe", plan="team", interval="month", seats=2).ok  # paid at Stripe: its customer
    ledger.payments = down
    assert do(ledger, "buy-ai-credits", pack="ai-1000").error.code == "payment_pending"
    assert ledger.payments_log.get_last() is None
    ledger.close()
    for gateway in (up, down):
        gateway.close()
    with create_engine(sqlalchemy_url(eventsourcing_env(url))).begin() as conn:
        conn.execute(text("UPDATE subledger_meta SET value = 'subledger-5 eventsourcing-9.5.6' WHERE key = 'event_store'"))
    test_gateway = TestPaymentGateway(url)
    forgot = build_ledger(url, catalog="workspace", clock=TestClock(utc("2026-04-12T00:00:00")), payments=test_gateway)
    try:
        with pytest.raises(LedgerError) as refused:
            forgot.resolve_payments("ws")
        assert refused.value.code == "payments_conflict"
        assert list(forgot.get("ws").pending_charges) == ["in_ws_0002"] and test_gateway.charges("ws") == []
    finally:
        forgot.close()
        test_gateway.close()
