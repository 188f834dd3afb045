"""Money moves exactly once (docs/payments.md): the charge leaves the decision, is keyed by an
invoice id never reused, and a decline, a second writer or a crash never parts money and ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.app import build_ledger
from domain.commands import parse_command
from domain.ledger import Ledger
from domain.payments import ChargeRequest, ChargeResult
from tests.conftest import ADMIN, utc
from tests.support import D, DECLINED, VISA, forms_on, lines, only_invoice, refused, types, workspace_on

THREE_DS = "pm_card_authenticationRequired"


def types_of(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def succeeded(b: Any, ws: str = "ws") -> list[tuple[str, Decimal]]:
    return [(c["idempotency_key"], c["amount"]) for c in b.payments.charges(ws) if c["outcome"] == "succeeded"]


def recorded_payments(b: Any, ws: str = "ws") -> Decimal:
    return sum((e.amount for e in b.ledger.workspace_events(ws) if type(e).__name__ == "PaymentSucceeded"), D("0"))


def test_R12_a_declined_upgrade_then_a_valid_card_charges_exactly_the_previewed_lines(book):
    """The seed 003 story with a declined card first: the retry is not handed the decline."""
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    first = b.do("ws", "change-plan", plan="team")
    assert first.error.code == "payment_failed"
    assert b.sub("ws").plan == "pro"
    b.do("ws", "add-payment-method", payment_method=VISA)
    preview = b.preview("ws", "change-plan", plan="team")
    retry = b.do("ws", "change-plan", plan="team")
    assert retry.ok, retry.error
    assert lines(only_invoice(retry)) == lines(only_invoice(preview)) == [("plan_credit", D("-12.67")),
                                                                          ("plan_charge", D("32.67"))]
    assert b.sub("ws").plan == "team"
    declined_key = first.events[0].charge_key
    assert retry.events[0].charge_key != declined_key
    assert [a for _, a in succeeded(b)] == [D("19.00"), D("20.00")]
    assert recorded_payments(b) == D("39.00")


def test_R12_a_declined_pack_does_not_poison_the_next_upgrade_nor_the_renewal(book):
    b = workspace_on(book, plan="team", seats=2)
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    assert b.do("ws", "buy-ai-credits", pack="ai-1000").error.code == "payment_failed"
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "change-plan", plan="business").ok
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.status, sub.open_invoices()) == ("active", [])
    assert sum((a for _, a in succeeded(b)), D("0")) == recorded_payments(b)


def test_R8_a_renewal_after_an_earlier_decline_succeeds_on_a_valid_card(book):
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="team").error.code == "payment_failed"
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").status, b.sub("ws").open_invoices()) == ("active", [])
    assert recorded_payments(b) == D("38.00")


def test_R12_invoice_ids_are_never_reused_after_a_decline(book):
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    b.at("2026-04-11T00:00:00")
    ids = [b.do("ws", "change-plan", plan="team").events[0].invoice_id for _ in range(3)]
    b.do("ws", "add-payment-method", payment_method=VISA)
    ids.append(only_invoice(b.do("ws", "change-plan", plan="team")).invoice_id)
    assert ids == ["in_ws_0002", "in_ws_0003", "in_ws_0004", "in_ws_0005"]
    keys = [c["idempotency_key"] for c in b.payments.charges("ws")]
    assert len(keys) == len(set(keys)) == 5


def test_R12_3d_secure_waits_then_applies_once_confirmed(book):
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    b.at("2026-04-11T00:00:00")
    waiting = b.do("ws", "change-plan", plan="team")
    assert waiting.error.code == "payment_action_required"
    assert types(waiting) == ["ChargeRequested", "PaymentActionRequired"]
    assert b.sub("ws").plan == "pro"
    refused(b, "ws", "payment_pending", "buy-ai-credits", pack="x")
    refused(b, "ws", "payment_pending", "change-plan", plan="free")
    assert b.do("ws", "set-members", members=2).ok  # usage and members are facts, never held up
    b.payments.confirm(waiting.events[0].charge_key)
    assert b.ledger.resolve_payments("ws")
    assert b.sub("ws").plan == "team"
    assert recorded_payments(b) == D("39.00")


def test_R12_3d_secure_abandoned_drops_the_change_and_voids_its_invoice(book):
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team")
    events = b.ledger.abandon_payment("ws")
    assert [type(e).__name__ for e in events] == ["UpgradePaymentFailed"]
    assert events[0].decline_code == "canceled"
    assert (b.sub("ws").plan, b.sub("ws").pending_charges) == ("pro", {})
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "change-plan", plan="team").ok


def test_R12_a_charge_awaiting_3d_secure_is_abandoned_when_the_period_ends(book):
    """Renewals never wait on a customer who does not authenticate."""
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team")
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.pending_charges, sub.status) == ("pro", {}, "active")
    assert [c["outcome"] for c in b.payments.charges("ws")] == ["succeeded", "canceled", "succeeded"]


class DiesAfterCharging:
    """A gateway whose process dies right after the provider took the money (kill -9 there)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.inner.charge(request)
        raise SystemExit("killed between the charge and its record")

    def cancel(self, key: str) -> ChargeResult:
        return self.inner.cancel(key)


def upgrade_then_die_after_charging(b: Any) -> None:
    """Pro -> Team on Apr 11 in a process that dies once the provider has taken the money."""
    b.at("2026-04-11T00:00:00")
    b.ledger.payments = DiesAfterCharging(b.payments)
    try:
        b.do("ws", "change-plan", plan="team")
    except SystemExit:
        pass
    b.ledger.payments = b.payments


def test_R11_a_crash_between_charge_and_record_is_resolved_by_the_key(book):
    b = forms_on(book)
    upgrade_then_die_after_charging(b)
    assert b.sub("ws").plan == "pro" and b.sub("ws").pending_charges  # charged, not yet recorded
    assert recorded_payments(b) == D("19.00") and len(succeeded(b)) == 2
    resolved = b.ledger.resolve_payments("ws")
    assert types_of(resolved["ws"]) == ["PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    assert b.sub("ws").plan == "team"
    assert recorded_payments(b) == D("39.00") and len(succeeded(b)) == 2


def test_R11_the_next_command_records_a_charge_left_pending_by_a_crash(book):
    b = forms_on(book)
    upgrade_then_die_after_charging(b)
    result = b.do("ws", "set-members", members=3)
    assert result.ok and "PlanUpgraded" in [type(e).__name__ for e in result.due_events]
    assert b.sub("ws").plan == "team" and recorded_payments(b) == D("39.00")



def visits(ledger: Ledger) -> list[str]:
    """The workspaces `ledger` loads to settle or advance, from now on."""
    seen: list[str] = []
    advance = ledger.advance_workspace

    def spy(workspace_id: str) -> Any:
        seen.append(workspace_id)
        return advance(workspace_id)

    ledger.advance_workspace = spy  # type: ignore[method-assign]
    return seen


def test_R11_resolving_all_payments_finds_a_crash_left_charge_through_the_due_index(book):
    """Idle workspaces (nothing pending, nothing due) are not loaded: the due index lists the
    workspace whose charge is pending as due at once."""
    b = forms_on(book)
    for idle in ("idle1", "idle2"):
        assert b.do(idle, "add-payment-method", payment_method=VISA).ok
        assert b.do(idle, "subscribe", plan="pro").ok
    upgrade_then_die_after_charging(b)
    seen = visits(b.ledger)
    resolved = b.ledger.resolve_payments()
    assert seen == ["ws"]
    assert types_of(resolved["ws"]) == ["PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    assert b.sub("ws").plan == "team" and recorded_payments(b) == D("39.00") and len(succeeded(b)) == 2


def test_R11_without_a_due_index_resolving_all_payments_visits_every_workspace(book):
    b = forms_on(book)
    assert b.do("idle", "add-payment-method", payment_method=VISA).ok
    upgrade_then_die_after_charging(b)
    b.ledger.due_index = False
    seen = visits(b.ledger)
    resolved = b.ledger.resolve_payments()
    assert sorted(seen) == ["idle", "ws"] and list(resolved) == ["ws"]
    assert b.sub("ws").plan == "team" and len(succeeded(b)) == 2

def test_R1_two_writers_on_one_workspace_never_double_charge(book):
    """Process A upgrades while process B buys a pack: the decision that loses the race is
    decided again before any money moves, so each charge has its own invoice and key."""
    b = workspace_on(book, plan="team", seats=2)
    b.at("2026-04-11T00:00:00")
    other = Ledger(b.ledger.env, catalogs=b.ledger.catalogs, default_catalog="workspace", clock=b.clock,
                   payments=b.payments)
    real_save = Ledger._save
    raced: list[Any] = []

    def save_after_b(self: Ledger, sub: Any, events: Any, **kwargs: Any) -> None:
        if self is b.ledger and not raced:
            raced.append(other.handle("ws", parse_command("buy-ai-credits", {"pack": "ai-1000"}), ADMIN))
        real_save(self, sub, events, **kwargs)

    try:
        Ledger._save = save_after_b  # type: ignore[method-assign]
        upgraded = b.do("ws", "change-plan", plan="business")
    finally:
        Ledger._save = real_save  # type: ignore[method-assign]
        other.close()
    assert raced[0].ok and upgraded.ok, (raced[0].error, upgraded.error)
    charges = [(k.split(":")[1], a) for k, a in succeeded(b)]
    assert len({invoice for invoice, _ in charges}) == len(charges) == 3
    assert sum((a for _, a in charges), D("0")) == recorded_payments(b)


def first_subscription_awaiting_3d_secure(b: Any) -> Any:
    """A workspace with no paid period of its own subscribes on 2026-04-10 with a card that asks
    for 3-D Secure: its first period would run to 2026-05-10."""
    assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
    b.at("2026-04-10T00:00:00")
    waiting = b.do("ws", "subscribe", plan="team")
    assert waiting.error.code == "payment_action_required"
    return waiting


def test_R12_a_first_subscription_awaiting_3d_secure_is_abandoned_23_hours_after_it_was_asked_for(book, db_url):
    """Nothing else falls due on a workspace with no period: it waited for ever, and a customer
    confirming weeks later paid for a period begun before the subscription existed, or for
    periods already over. As Stripe expires an incomplete subscription, it is given up."""
    b = book()
    waiting = first_subscription_awaiting_3d_secure(b)
    fresh = build_ledger(db_url, catalog="forms", clock=b.clock, payments=b.payments)
    assert fresh.get("ws").next_due_at() == utc("2026-04-10T23:00:00")
    fresh.close()  # another process reads the instant it is given up as due
    b.at("2026-04-10T22:59:59")
    assert b.sub("ws").pending_charges
    b.at("2026-04-10T23:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.pending_charges, sub.period_end) == (None, {}, None)
    last = b.ledger.workspace_events("ws")[-1]
    assert (type(last).__name__, last.decline_code, last.timestamp) == ("ChargeDeclined", "canceled",
                                                                      utc("2026-04-10T23:00:00"))
    assert [c["outcome"] for c in b.payments.charges("ws")] == ["canceled"]
    b.at("2026-05-20T00:00:00")
    assert b.ledger.resolve_payments("ws") == {}  # confirming later is no longer possible
    with_card = b.do("ws", "add-payment-method", payment_method=VISA)
    assert with_card.ok and b.do("ws", "subscribe", plan="team").ok
    assert b.payments.charges("ws")[-1]["idempotency_key"] != waiting.events[0].charge_key


def test_R12_a_first_subscription_confirmed_in_time_renews_at_its_period_end_never_before(book):
    b = book()
    waiting = first_subscription_awaiting_3d_secure(b)
    b.at("2026-04-10T20:00:00")
    b.payments.confirm(waiting.events[0].charge_key)
    assert b.ledger.resolve_payments("ws")
    b.at("2026-05-10T01:00:00")
    stamps = [e.timestamp for e in b.ledger.workspace_events("ws")]
    assert stamps == sorted(stamps)
    renewals = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "PeriodRenewed"]
    assert [(r.period_start, r.timestamp) for r in renewals] == [(utc("2026-05-10"), utc("2026-05-10"))]


def team_from_april_10_then_card(b: Any, card: str) -> Any:
    """Team paid from 2026-04-10 with a good card, then `card` as the default from the next renewal."""
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "subscribe", plan="team").ok
    assert b.do("ws", "add-payment-method", payment_method=card).ok
    return b


def test_R8_a_dunning_retry_on_a_3d_secure_card_asks_the_customer(book):
    """A retry made stayed due (its invoice's retry day), so the charge was abandoned the moment
    it was asked for, before the customer was ever asked: four failures, then suspension."""
    b = team_from_april_10_then_card(book(), THREE_DS)
    b.at("2026-06-13T00:00:00")
    events = b.ledger.workspace_events("ws")
    retry = next(e for e in events if type(e).__name__ == "ChargeRequested" and e.purpose == "dunning_retry")
    after = [e for e in events if getattr(e, "invoice_id", None) == retry.invoice_id
             and e.originator_version > retry.originator_version]
    assert [type(e).__name__ for e in after][:2] == ["PaymentActionRequired", "PaymentFailed"]
    assert after[1].timestamp - retry.timestamp == timedelta(hours=23)


@pytest.mark.parametrize("how", ["ai_pack_on_free", "pay_invoice_suspended"])
def test_R12_a_charge_awaiting_3d_secure_never_waits_for_ever(book, how):
    """Where nothing else falls due (an AI pack on a free plan, pay-invoice of a suspended
    workspace), the charge stayed pending a year later and refused every billing change."""
    if how == "ai_pack_on_free":
        b = book("workspace")
        assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
        b.at("2026-04-10T00:00:00")
        assert b.do("ws", "subscribe", plan="free").ok
        assert b.do("ws", "buy-ai-credits", pack="ai-1000").error.code == "payment_action_required"
    else:
        b = team_from_april_10_then_card(book(), DECLINED)
        b.at("2026-06-20T00:00:00")
        assert b.sub("ws").status == "suspended"
        assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
        assert b.do("ws", "pay-invoice").error.code == "payment_action_required"
    b.at("2026-06-21T00:00:00")
    assert not b.sub("ws").pending_charges


def test_R25_a_preview_gives_up_a_3d_secure_charge_past_its_window_as_the_command_does(book):
    """The scheduler had not run since the upgrade's 3-D Secure window ended: the preview refused
    `payment_pending` (no lines, no quote) while the command gave the charge up, upgraded and charged."""
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    assert b.do("ws", "change-plan", plan="team").error.code == "payment_action_required"
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.clock.move_to(utc("2026-04-02T06:00:00"))  # 30 hours on, no scheduler run
    preview = b.preview("ws", "change-plan", plan="team")
    assert preview.ok, preview.error
    assert types_of(preview.due_events) == ["UpgradePaymentFailed"]
    result = b.do("ws", "change-plan", plan="team")
    assert result.ok and types_of(result.due_events) == ["UpgradePaymentFailed"]
    assert [i.amount_due for i in preview.invoices()] == [i.amount_due for i in result.invoices()] == [D("29.00")]


def test_R12_one_scheduler_run_gives_up_a_3d_secure_renewal_past_its_window(book):
    """Found 9 days late by one run, the renewal's charge answered "authenticate" and was left
    waiting, the workspace `active` and still due: only a second run gave it up."""
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    b.scheduler_down_until("2026-05-10T00:00:00")
    sub = b.sub("ws")
    assert (sub.pending_charges, sub.status) == ({}, "past_due")
    assert b.ledger.due_workspaces() == []
