"""Scope, actors, audit, already-on-plan and custom contracts (R1-R4, R9), idempotency and bad input,
on the forms (seed 003) and workspace (seed 000) catalogs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from domain.commands import Actor, parse_command
from domain.errors import LedgerError
from tests.conftest import ADMIN, MEMBER, SALES, utc
from tests.support import D, VISA, forms_on, only_invoice, refused, types, version, workspace_on

BILLING_ADMIN = Actor(id="carol", role="billing_admin")
OWNER = Actor(id="olga", role="owner")


# ------------------------------------------------------------------ R1 scope


def test_R1_plan_change_affects_only_the_named_workspace(book):
    """R1: upgrading one workspace leaves every other workspace of the same admin untouched."""
    b = forms_on(book, ws="alpha")
    assert b.do("beta", "add-payment-method", payment_method=VISA).ok
    assert b.do("beta", "subscribe", plan="pro").ok
    beta_version = version(b, "beta")
    result = b.do("alpha", "change-plan", plan="team")
    assert result.ok
    assert {e.originator_id for e in result.events} == {b.sub("alpha").id}
    assert b.sub("alpha").plan == "team"
    assert b.sub("beta").plan == "pro"
    assert version(b, "beta") == beta_version
    assert sorted(b.ledger.workspaces()) == ["alpha", "beta"]


def test_R1_workspace_seat_change_affects_only_the_named_workspace(book):
    """R1 on seed 000: seats bought for one workspace are not added to another."""
    b = workspace_on(book, ws="alpha")
    assert b.do("beta", "add-payment-method", payment_method=VISA).ok
    assert b.do("beta", "subscribe", plan="team", seats=2).ok
    assert b.do("alpha", "set-seats", seats=9).ok
    assert (b.sub("alpha").seats, b.sub("beta").seats) == (9, 2)


# ------------------------------------------------------------------ R2 actors


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("change-plan", {"plan": "team"}),
        ("change-plan", {"plan": "pro", "interval": "year"}),
        ("change-plan", {"plan": "free"}),
        ("cancel", {}),
        ("add-payment-method", {"payment_method": VISA}),
    ],
)
def test_R2_member_may_not_change_plan_interval_or_billing(book, command, args):
    """R2: a plain member is refused `not_authorized` and the refusal changes nothing."""
    b = forms_on(book)
    result = refused(b, "ws", "not_authorized", command, actor=MEMBER, **args)
    assert "admin" in result.error.message
    assert b.sub("ws").plan == "pro"


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("set-seats", {"seats": 9}),
        ("set-storage-addon", {"addon": "storage-100gb"}),
        ("buy-ai-credits", {"pack": "ai-1000"}),
        ("change-plan", {"plan": "business", "seats": 5}),
    ],
)
def test_R2_member_may_not_change_seats_or_add_ons(book, command, args):
    """R2 on seed 000: seats and add-ons are admin-only too."""
    b = workspace_on(book)
    refused(b, "ws", "not_authorized", command, actor=MEMBER, **args)
    sub = b.sub("ws")
    assert (sub.plan, sub.seats, sub.storage_addon, sub.ai_purchased) == ("team", 5, None, 0)


def test_R2_member_refused_on_a_new_workspace_records_nothing(book):
    """R2: the refusal does not even register the workspace."""
    b = book("forms")
    refused(b, "fresh", "not_authorized", "subscribe", actor=MEMBER, plan="free")
    assert b.sub("fresh") is None
    assert b.ledger.workspaces() == []


@pytest.mark.parametrize("actor", [ADMIN, BILLING_ADMIN, OWNER], ids=lambda a: a.role)
def test_R2_admins_and_billing_admins_may_change_plan(book, actor):
    b = forms_on(book)
    result = b.do("ws", "change-plan", actor=actor, plan="team")
    assert result.ok
    assert b.sub("ws").plan == "team"


def test_R2_members_may_still_report_usage(book):
    """R2 limits plan, seat, interval and add-on changes, not usage facts."""
    b = workspace_on(book)
    assert b.do("ws", "set-members", actor=MEMBER, members=4).ok
    assert b.do("ws", "report-storage", actor=MEMBER, gb=D("12.5")).ok
    assert b.do("ws", "consume-ai-credits", actor=MEMBER, credits=10).ok


# ------------------------------------------------------------------ R3 audit


def test_R3_every_recorded_change_carries_actor_role_time_and_channel(book):
    """R3: who (id + role), when, and through which channel, on the stored events."""
    b = forms_on(book)
    b.at("2026-04-11T09:30:00")
    command = parse_command("change-plan", {"plan": "team"})
    result = b.ledger.handle("ws", command, BILLING_ADMIN, channel="web", reason="more forms")
    assert types(result) == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    stored = b.ledger.workspace_events("ws", gt=result.events[0].originator_version - 1)
    assert [type(e).__name__ for e in stored] == types(result)
    for event in stored:
        assert (event.actor_id, event.actor_role, event.channel) == ("carol", "billing_admin", "web")
        assert event.timestamp == utc("2026-04-11T09:30:00")
        assert event.reason == "more forms"
        assert event.catalog_version == "forms@2026-11-23"


def test_R3_scheduler_changes_are_recorded_as_the_system_at_their_due_instant(book):
    """R3: renewals are recorded by the system scheduler, at the period end, not when noticed."""
    b = forms_on(book)
    b.at("2026-05-20T00:00:00")
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "PeriodRenewed"]
    assert len(renewal) == 1
    (event,) = renewal
    assert (event.actor_id, event.actor_role, event.channel) == ("scheduler", "system", "scheduler")
    assert event.timestamp == utc("2026-05-01T00:00:00")


def test_R3_cli_and_webhook_channels_are_recorded(book):
    b = book("forms")
    for channel in ("cli", "webhook"):
        result = b.ledger.handle("ws", parse_command("add-payment-method", {"payment_method": VISA}), ADMIN,
                                 channel=channel)
        assert [e.channel for e in result.events] == [channel] * len(result.events)


# ------------------------------------------------------------------ R4 already on plan


def test_R4_choosing_the_current_plan_is_refused(book):
    """R4: same plan, same interval -> `already_on_plan`."""
    b = forms_on(book)
    result = refused(b, "ws", "already_on_plan", "change-plan", plan="pro")
    assert "already" in result.error.message
    refused(b, "ws", "already_on_plan", "change-plan", plan="pro", interval="month")


def test_R4_same_plan_on_another_interval_is_not_the_current_plan(book):
    """R4 compares plan, tier and interval: Pro annual is a different choice from Pro monthly."""
    b = forms_on(book)
    result = b.do("ws", "change-plan", plan="pro", interval="year")
    assert result.ok
    assert types(result)[:2] == ["ChargeRequested", "IntervalChanged"]


def test_R4_free_workspace_choosing_free_is_refused(book):
    b = book("forms")
    assert b.do("ws", "subscribe", plan="free").ok
    refused(b, "ws", "already_on_plan", "change-plan", plan="free")


def test_R4_workspace_on_same_plan_and_seats_is_refused(book):
    """R4 on seed 000: same plan, interval and seat count."""
    b = workspace_on(book, seats=5)
    refused(b, "ws", "already_on_plan", "change-plan", plan="team", seats=5)
    refused(b, "ws", "already_on_plan", "change-plan", plan="team")


# ------------------------------------------------------------------ R9 contracts


@pytest.mark.parametrize("contract", ["enterprise", "university", "government", "discount", "custom"])
def test_R9_custom_contract_gets_contact_sales_for_any_plan_change(book, contract):
    """R9: a workspace on a custom contract is sent to sales instead of checkout."""
    b = forms_on(book)
    assert b.do("ws", "set-contract", actor=SALES, contract=contract).ok
    for args in ({"plan": "team"}, {"plan": "free"}, {"plan": "pro", "interval": "year"}):
        result = refused(b, "ws", "contact_sales", "change-plan", **args)
        assert contract in result.error.message
    refused(b, "ws", "contact_sales", "cancel")
    assert b.sub("ws").plan == "pro"


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("change-plan", {"plan": "business", "seats": 5}),
        ("change-plan", {"plan": "team", "interval": "year"}),
        ("set-seats", {"seats": 8}),
        ("set-storage-addon", {"addon": "storage-100gb"}),
        ("buy-ai-credits", {"pack": "ai-1000"}),
    ],
)
def test_R9_contract_workspace_gets_contact_sales_for_seats_interval_and_add_ons(book, command, args):
    """R9 on seed 000: plan, seat, interval and add-on changes all go to sales."""
    b = workspace_on(book)
    assert b.do("ws", "set-contract", actor=SALES, contract="campus").ok
    refused(b, "ws", "contact_sales", command, **args)


def test_R9_contract_workspace_may_still_update_its_payment_method(book):
    b = forms_on(book)
    assert b.do("ws", "set-contract", actor=SALES, contract="education").ok
    assert b.do("ws", "add-payment-method", payment_method="pm_card_mastercard").ok


def test_R9_lifting_the_contract_restores_self_serve(book):
    b = forms_on(book)
    b.do("ws", "set-contract", actor=SALES, contract="lab")
    refused(b, "ws", "contact_sales", "change-plan", plan="team")
    assert b.do("ws", "set-contract", actor=SALES, contract=None).ok
    assert b.do("ws", "change-plan", plan="team").ok


def test_R9_a_contract_withdraws_a_self_serve_downgrade_scheduled_before_it(book):
    """The downgrade applied at the boundary under the contract, and cancel-change (contact_sales)
    could not keep the plan: the contract's terms govern the plan from when it is set."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "change-plan", plan="pro").ok and b.sub("ws").scheduled
    result = b.do("ws", "set-contract", actor=SALES, contract="discount")
    assert result.ok and types(result) == ["DowngradeCancelled", "ContractSet"]
    b.at("2026-05-02T00:00:00")
    assert b.sub("ws").plan == "team"


def test_R9_a_contract_withdraws_a_self_serve_cancellation_scheduled_before_it(book):
    """The cancellation applied at the period's end under the contract, and cancel-change was
    contact_sales: the contract governs the plan from when it is set, as for a downgrade."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "cancel").ok and b.sub("ws").scheduled
    result = b.do("ws", "set-contract", actor=SALES, contract="enterprise")
    assert result.ok and types(result) == ["CancellationCancelled", "ContractSet"]
    b.at("2026-05-02T00:00:00")
    assert (b.sub("ws").status, b.sub("ws").plan) == ("active", "team")


def test_R9_R15_a_contract_starts_from_a_plan_not_a_trial(book):
    """A trial falls back to free at its end (R15), which a contract would then hold the
    workspace to: the contract is refused until the workspace is on a plan."""
    b = book("workspace")
    assert b.do("ws", "subscribe", plan="trial").ok
    result = refused(b, "ws", "not_subscribed", "set-contract", actor=SALES, contract="university")
    assert "subscribe it to one first" in result.error.message


def test_R9_R12_a_contract_waits_for_a_pending_upgrade_which_never_lands_self_serve_on_it(book):
    """Set while an upgrade awaited 3-D Secure, the contract was recorded, and the confirmed upgrade
    then applied self-serve under it. It is refused payment_pending, as other billing changes are."""
    b = forms_on(book, plan="pro")
    assert b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
    assert b.do("ws", "change-plan", plan="team").error.code == "payment_action_required"
    refused(b, "ws", "payment_pending", "set-contract", actor=SALES, contract="enterprise")
    assert b.sub("ws").contract is None


def test_R9_a_renewal_awaiting_authentication_never_holds_up_a_contract(book):
    """A renewal's collection changes no plan: sales need not abandon the customer's payment first."""
    b = forms_on(book, plan="pro")
    assert b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
    b.at("2026-05-01T01:00:00")
    assert b.sub("ws").pending_charges
    assert b.do("ws", "set-contract", actor=SALES, contract="enterprise").ok


@pytest.mark.parametrize(("catalog", "plan"), [("forms", "scale"), ("workspace", "enterprise")])
def test_R9_contract_plans_are_sold_by_sales_only(book, catalog, plan):
    """R9: Scale (003) and Enterprise (000) are never self-serve, from subscribe or change-plan."""
    b = book(catalog)
    b.do("ws", "add-payment-method", payment_method=VISA)
    refused(b, "ws", "contact_sales", "subscribe", plan=plan)
    assert b.do("ws", "subscribe", plan="free").ok
    refused(b, "ws", "contact_sales", "change-plan", plan=plan)


# ------------------------------------------------------------------ idempotency


def test_repeat_with_the_same_key_returns_the_first_result_and_records_nothing(book):
    b = forms_on(book)
    first = b.do("ws", "change-plan", key="upgrade-1", plan="team")
    assert first.ok and not first.replayed
    after = version(b, "ws")
    again = b.do("ws", "change-plan", key="upgrade-1", plan="team")
    assert again.ok and again.replayed
    assert types(again) == types(first) == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    assert [e.originator_version for e in again.events] == [e.originator_version for e in first.events]
    assert only_invoice(again).amount_due == only_invoice(first).amount_due
    assert version(b, "ws") == after
    assert len(b.payments.charges()) == 2  # the subscription and the upgrade, never a third


def test_repeat_with_the_same_key_is_still_the_first_result_after_time_passes(book):
    b = forms_on(book)
    first = b.do("ws", "set-contract", actor=SALES, key="k1", contract="lab")
    b.at("2026-04-20T00:00:00")
    again = b.do("ws", "set-contract", actor=SALES, key="k1", contract="lab")
    assert again.replayed
    assert [e.originator_version for e in again.events] == [e.originator_version for e in first.events]


def test_same_key_with_other_arguments_is_an_idempotency_conflict(book):
    b = forms_on(book)
    assert b.do("ws", "change-plan", key="change-1", plan="team").ok
    before = version(b, "ws")
    result = b.do("ws", "change-plan", key="change-1", plan="free")
    assert result.error.code == "idempotency_conflict"
    assert result.events == []
    assert version(b, "ws") == before
    assert b.sub("ws").scheduled is None


def test_same_key_on_another_command_is_an_idempotency_conflict(book):
    b = forms_on(book)
    assert b.do("ws", "change-plan", key="k", plan="team").ok
    assert b.do("ws", "cancel", key="k").error.code == "idempotency_conflict"


def test_a_refused_command_does_not_use_up_its_key(book):
    """Nothing recorded means nothing remembered: the retry with the fix goes through."""
    b = book("forms")
    assert b.do("ws", "subscribe", plan="free").ok
    refused(b, "ws", "payment_method_required", "change-plan", plan="pro")
    b.do("ws", "add-payment-method", payment_method=VISA)
    result = b.do("ws", "change-plan", key="retry", plan="pro")
    assert result.ok and not result.replayed


def test_keys_are_per_workspace(book):
    b = forms_on(book, ws="alpha")
    b.do("beta", "add-payment-method", payment_method=VISA)
    b.do("beta", "subscribe", plan="pro")
    assert b.do("alpha", "change-plan", key="same", plan="team").ok
    result = b.do("beta", "change-plan", key="same", plan="team")
    assert result.ok and not result.replayed


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("change-plan", {"plan": "Team!"}),
        ("change-plan", {"plan": "team", "interval": "week"}),
        ("change-plan", {"plan": "team", "colour": "red"}),
        ("set-seats", {"seats": 0}),
        ("set-seats", {"seats": 2.5}),
        ("set-seats", {"seats": "3"}),
        ("set-seats", {}),
        ("report-storage", {"gb": -1}),
        ("report-storage", {"gb": "NaN"}),
        ("consume-ai-credits", {"credits": 0}),
        ("add-payment-method", {"payment_method": "4242424242424242"}),
        ("set-contract", {"contract": "friends"}),
        ("refund", {}),
    ],
)
def test_bad_input_is_an_invalid_request_before_anything_is_decided(book, command, args):
    b = workspace_on(book)
    before = version(b, "ws")
    with pytest.raises(LedgerError) as caught:
        b.do("ws", command, **args)
    assert caught.value.code == "invalid_request"
    assert version(b, "ws") == before


@pytest.mark.parametrize("workspace", ["", "has space", "x" * 65, "ünïcode", "../etc"])
def test_bad_workspace_id_is_an_invalid_request(book, workspace):
    b = book("forms")
    with pytest.raises(LedgerError) as caught:
        b.do(workspace, "subscribe", plan="free")
    assert caught.value.code == "invalid_request"


def test_unknown_plan_is_refused_with_the_known_plans(book):
    b = forms_on(book)
    result = refused(b, "ws", "unknown_plan", "change-plan", plan="platinum")
    assert "free, pro, team, scale" in result.error.message


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("change-plan", {"plan": "team", "seats": 4}),       # forms plans are not billed per seat
        ("set-storage-addon", {"addon": "storage-100gb"}),   # forms sells no add-ons
        ("buy-ai-credits", {"pack": "ai-1000"}),              # nor AI credit packs
        ("record-usage", {"operations": 10}),                 # nor operation tiers
        ("change-plan", {"plan": "pro", "tier": 10_000}),     # no tiers
    ],
)
def test_commands_that_do_not_fit_the_catalog_are_invalid_requests(book, command, args):
    b = forms_on(book)
    refused(b, "ws", "invalid_request", command, **args)


def test_commands_the_workspace_state_refuses_have_their_own_codes(book):
    b = forms_on(book)
    refused(b, "ws", "already_subscribed", "subscribe", plan="pro")
    refused(b, "ws", "no_open_invoice", "pay-invoice")


def test_change_plan_before_subscribing_is_refused_not_subscribed(book):
    b = book("workspace")
    refused(b, "ws", "not_subscribed", "change-plan", plan="team", seats=2)
    assert b.sub("ws") is None


def test_the_test_clock_never_goes_back(book):
    b = book("forms", "2026-04-10T00:00:00")
    with pytest.raises(LedgerError) as caught:
        b.at("2026-04-09T00:00:00")
    assert caught.value.code == "invalid_request"
    with pytest.raises(LedgerError):
        b.clock.move_to(datetime(2026, 5, 1))  # naive: no timezone
    assert b.clock.now() == datetime(2026, 4, 10, tzinfo=timezone.utc)


def test_R2_R9_only_sales_may_set_or_lift_a_contract_never_the_workspaces_own_people(book):
    """Lifting a contract is no way around contact sales: the workspace's admin whom the contract
    sends to sales could lift it in one request and change plans self-serve."""
    b = forms_on(book)
    for who in (MEMBER, ADMIN, Actor(id="olga", role="owner"), Actor(id="bill", role="billing_admin")):
        refused(b, "ws", "not_authorized", "set-contract", actor=who, contract="lab")
    assert b.do("ws", "set-contract", actor=SALES, contract="lab").ok
    for who in (MEMBER, ADMIN, Actor(id="olga", role="owner"), Actor(id="bill", role="billing_admin")):
        result = refused(b, "ws", "not_authorized", "set-contract", actor=who, contract=None)
        assert "set and lifted by sales (R9): contact sales" in result.error.message
    refused(b, "ws", "contact_sales", "change-plan", plan="team")
    refused(b, "ws", "not_authorized", "change-plan", actor=SALES, plan="team")  # sales sets terms, not plans