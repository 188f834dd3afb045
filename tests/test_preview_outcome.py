"""R25: a preview shows the outcome: the plan, tier, interval, seats and add-ons the change would
leave, and the renewal that would follow (its date and amount); applying the change yields it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters import render
from adapters.app import read_models
from adapters.cli import app
from adapters.scenario import run_scenario
from domain.commands import parse_command
from projections.upcoming_invoice import upcoming_of
from projections.views import outcome_view, plan_state
from tests.conftest import ADMIN
from tests.support import VISA, catalog_variant, forms_on, workspace_on


def preview_then_apply(b: Any, ws: str, command: str, **args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the previewed outcome, the state after applying the same command at the same instant)."""
    before = b.sub(ws).version
    previewed = b.ledger.preview(ws, parse_command(command, args), ADMIN)
    assert previewed.ok, previewed.error
    outcome = outcome_view(previewed.subscription, b.ledger.catalog_for(previewed.subscription))
    assert b.sub(ws).version == before, "a preview records nothing"
    assert b.do(ws, command, **args).ok
    after = b.sub(ws)
    return outcome, plan_state(after, b.ledger.catalog_for(after))


def same_state(outcome: dict[str, Any], state: dict[str, Any]) -> None:
    shown = {k: v for k, v in outcome.items() if k not in ("addons", "next_renewal", "final_invoice")}
    assert shown == {k: v for k, v in state.items() if k != "version"}


def upcoming(b: Any, ws: str) -> dict[str, Any] | None:
    with read_models(b.ledger) as projections:
        projections.catch_up()
        with projections.engine.connect() as conn:
            return upcoming_of(conn, ws)


def test_R25_an_upgrade_preview_shows_the_new_plan_and_the_renewal_it_leads_to(book: Any) -> None:
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    outcome, state = preview_then_apply(b, "ws", "change-plan", plan="team")
    assert (outcome["plan"], outcome["interval"], outcome["seats"], outcome["addons"]) == ("team", "month", 10, [])
    assert outcome["next_renewal"] == {
        "at": "2026-05-01T00:00:00Z", "plan": "team", "tier": None, "interval": "month", "seats": 10, "addons": [],
        "subtotal": "49.00", "credit_applied": "0.00", "amount_due": "49.00", "currency": "USD"}
    same_state(outcome, state)
    forecast = upcoming(b, "ws")
    assert forecast is not None
    assert (forecast["due_at"], forecast["plan"], forecast["amount_due"]) == ("2026-05-01T00:00:00Z", "team", "49.00")


def test_R25_R14_monthly_to_annual_preview_moves_the_renewal_date(book: Any) -> None:
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    outcome, state = preview_then_apply(b, "ws", "change-plan", plan="pro", interval="year")
    assert (outcome["plan"], outcome["interval"]) == ("pro", "year")
    renewal = outcome["next_renewal"]
    assert (renewal["at"], renewal["interval"], renewal["amount_due"]) == ("2027-04-11T00:00:00Z", "year", "190.00")
    same_state(outcome, state)


def test_R25_R17_a_scheduled_downgrade_preview_shows_the_schedule_and_the_lower_renewal(book: Any) -> None:
    b = forms_on(book, "team")
    b.at("2026-04-11T00:00:00")
    outcome, state = preview_then_apply(b, "ws", "change-plan", plan="pro")
    assert outcome["plan"] == "team", "the higher plan stays until the period ends (R17)"
    assert outcome["scheduled_change"]["plan"] == "pro"
    renewal = outcome["next_renewal"]
    assert (renewal["at"], renewal["plan"], renewal["seats"], renewal["amount_due"]) == \
        ("2026-05-01T00:00:00Z", "pro", 3, "19.00")
    same_state(outcome, state)
    forecast = upcoming(b, "ws")
    assert (forecast["amount_due"], forecast["seats"]) == ("19.00", 3), "Pro's 3 seats, as `show` says"


def test_R25_R21_R22_seat_and_add_on_previews_show_quantities_and_the_renewal_amount(book: Any) -> None:
    b = workspace_on(book, "team", seats=5)
    assert b.do("ws", "set-storage-addon", addon="storage-100gb").ok
    b.at("2026-04-16T00:00:00")
    outcome, state = preview_then_apply(b, "ws", "set-seats", seats=8)
    assert (outcome["seats"], outcome["addons"]) == (8, ["storage-100gb"])
    renewal = outcome["next_renewal"]
    assert (renewal["seats"], renewal["addons"], renewal["amount_due"]) == (8, ["storage-100gb"], "74.00")
    same_state(outcome, state)
    outcome, state = preview_then_apply(b, "ws", "set-storage-addon", addon="storage-1tb")
    assert outcome["addons"] == ["storage-1tb"] and outcome["next_renewal"]["amount_due"] == "114.00"
    same_state(outcome, state)


def test_R25_R16_an_operations_tier_preview_shows_the_tier_and_its_operations(book: Any) -> None:
    b = book("operations")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="core", tier=10000).ok
    b.at("2026-04-11T00:00:00")
    outcome, state = preview_then_apply(b, "ws", "change-plan", plan="pro", tier=20000)
    assert (outcome["plan"], outcome["tier"], outcome["operations_remaining"]) == ("pro", 20000, 20000)
    assert outcome["next_renewal"]["tier"] == 20000 and outcome["next_renewal"]["amount_due"] == "34.12"
    same_state(outcome, state)


def test_R25_R19_a_final_invoice_is_forecast_by_the_preview_and_the_upcoming_invoice(book: Any, tmp_path: Path) -> None:
    """`overage = "bill"`: 12,000 operations on a 10,000 tier (10.59) leave 2,000 to bill when the
    subscription ends (2.12). A cancel's preview and the upcoming invoice said nothing would be
    billed at the period end, and then a final invoice was issued."""
    b = book(catalog_variant(tmp_path, "operations", "ops-bill", overage='"bill"'))
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="core", tier=10000).ok
    assert b.do("ws", "record-usage", operations=12_000).ok
    b.at("2026-04-11T00:00:00")
    outcome, _ = preview_then_apply(b, "ws", "cancel")
    assert outcome["next_renewal"] is None
    assert outcome["final_invoice"] == {"at": "2026-05-01T00:00:00Z", "subtotal": "2.12", "credit_applied": "0.00",
                                        "amount_due": "2.12", "currency": "USD"}
    forecast = upcoming(b, "ws")
    assert (forecast["purpose"], forecast["due_at"], forecast["plan"], forecast["tier"], forecast["amount_due"]) == \
        ("final", "2026-05-01T00:00:00Z", "core", 10000, "2.12")
    assert [line["kind"] for line in forecast["lines"]] == ["operations_overage"]
    printed = render.invoices_text({"workspace": "ws", "invoices": [], "upcoming": forecast})
    assert "upcoming final invoice, as billing ends, due 2026-05-01T00:00:00Z" in printed
    b.at("2026-05-01T00:00:00")
    final = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert (final.purpose, final.amount_due) == ("final", Decimal("2.12"))
    assert upcoming(b, "ws") is None


def test_R25_the_upcoming_invoice_forecasts_the_renewal_while_a_purchase_awaits_3d_secure(book: Any) -> None:
    """A purchase is never assumed to land, and the forecast stopped at it: no upcoming invoice
    at all, where the renewal of what is already paid for is issued anyway."""
    b = workspace_on(book, "team", seats=5)
    assert b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
    b.at("2026-04-20T00:00:00")
    assert b.do("ws", "set-seats", seats=8).error.code == "payment_action_required"
    forecast = upcoming(b, "ws")
    assert forecast is not None and (forecast["purpose"], forecast["seats"]) == ("renewal", 5)
    b.at("2026-04-21T00:00:00")  # abandoned 23 hours after it was asked for
    assert not b.sub("ws").pending_charges and upcoming(b, "ws") == forecast | {"position": upcoming(b, "ws")["position"],
                                                                                 "updated_at": upcoming(b, "ws")["updated_at"]}


def test_R25_a_refused_preview_has_no_outcome_and_cancel_has_no_renewal(tmp_path: Path) -> None:
    admin = {"id": "alice", "role": "admin"}
    steps = [
        {"at": "2026-04-01T00:00:00Z", "workspace": "acme", "actor": admin, "do": "add-payment-method",
         "with": {"payment_method": VISA}},
        {"at": "2026-04-01T00:00:00Z", "workspace": "acme", "actor": admin, "do": "subscribe", "with": {"plan": "pro"}},
        {"at": "2026-04-02T00:00:00Z", "workspace": "acme", "actor": admin, "do": "preview",
         "with": {"do": "change-plan", "plan": "pro"}, "expect": {"error": "already_on_plan", "outcome": None}},
        {"at": "2026-04-02T00:00:00Z", "workspace": "acme", "actor": admin, "do": "preview", "with": {"do": "cancel"},
         "expect": {"outcome": {"status": "cancel_scheduled", "next_renewal": None}}},
        {"at": "2026-04-02T00:00:00Z", "workspace": "acme", "actor": admin, "do": "show", "expect": {"outcome": None}},
        {"at": "2026-04-02T00:00:00Z", "workspace": "acme", "actor": admin, "do": "preview",
         "with": {"do": "change-plan", "plan": "team"}, "expect": {"outcome": {"plan": "pro"}}},
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"catalog": "forms", "steps": steps}))
    outputs, code = run_scenario(path)
    assert code == 1
    assert [o["expect_failures"] for o in outputs[:5]] == [[]] * 5
    assert outputs[5]["expect_failures"] == ['outcome.plan: expected "pro", got "team"']


@pytest.mark.parametrize("as_json", [True, False])
def test_R25_the_cli_preview_prints_the_outcome(tmp_path: Path, as_json: bool) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/cli.db"]
    runner = CliRunner()
    assert runner.invoke(app, [*db, "add-payment-method", "ws1", "--payment-method", VISA]).exit_code == 0
    assert runner.invoke(app, [*db, "subscribe", "ws1", "--plan", "pro"]).exit_code == 0
    result = runner.invoke(app, [*db, *(["--json"] if as_json else []), "preview", "ws1", "--do", "change-plan",
                                 "--plan", "team"])
    assert result.exit_code == 0, result.output
    if as_json:
        out = json.loads(result.stdout)
        assert (out["state"]["plan"], out["outcome"]["plan"], out["outcome"]["next_renewal"]["amount_due"]) == \
            ("pro", "team", "49.00")
    else:
        assert "now: pro (monthly)" in result.stdout
        assert "would be: team (monthly)" in result.stdout
        assert "next renewal: " in result.stdout and "team (monthly), 10 seats: 49.00 USD due" in result.stdout


def test_R25_R12_a_preview_refuses_like_the_command_while_a_renewal_awaits_3d_secure(book: Any) -> None:
    """The preview assumed the renewal waiting for the customer was paid: it showed a
    PaymentSucceeded that never happened and accepted the change the command refuses."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
    b.at("2026-05-01T12:00:00")
    assert b.sub("ws").pending_charges
    preview = b.preview("ws", "change-plan", plan="pro")
    assert b.do("ws", "change-plan", plan="pro").error.code == "payment_pending"
    assert preview.error is not None and preview.error.code == "payment_pending"
    assert "PaymentSucceeded" not in [type(e).__name__ for e in preview.due_events]
