"""Operations catalogs (004) under other policies: upgrades that keep the cycle (R11, R16), tier
changes in the audit trail, and what happens to usage beyond the allowance (R19)."""

from __future__ import annotations

import pytest

from tests.conftest import utc
from tests.support import DECLINED, D, VISA, catalog_variant, lines, only_invoice, refused, types


def ops_book(book, tmp_path, **policy):
    if not policy:
        return book("operations", "2026-04-01T00:00:00")
    return book(catalog_variant(tmp_path, "operations", "operations-custom", **policy), "2026-04-01T00:00:00")


def subscribed(b, plan="core", tier=150_000, interval="month"):
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan=plan, tier=tier, interval=interval).ok
    return b


# ------------------------------------------------------------------ R16/R11 upgrade_new_cycle = false


def test_R16_R11_upgrade_keeping_the_cycle_credits_unused_operations_and_raises_limits_at_once(book, tmp_path):
    """`upgrade_new_cycle = false`: Core 150,000 (113.85) with 50,000 used, Pro 150,000 (190.00)
    ten days in. The credit follows `upgrade_credit` (100,000 unused x 113.85/150,000 = 75.90),
    the charge is the rest of the period (190.00 x 20/30 = 126.67), and the new tier's operations
    apply at once for the rest of the period (150,000 x 20/30 = 100,000); the cycle stays."""
    b = subscribed(ops_book(book, tmp_path, upgrade_new_cycle="false"))
    assert b.do("ws", "record-usage", operations=50_000).ok
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="pro", tier=150_000)
    invoice = only_invoice(result)
    assert lines(invoice) == [("operations_credit", D("-75.90")), ("plan_charge", D("126.67"))]
    assert invoice.amount_due == D("50.77")
    assert "OperationsConvertedToCredit" in types(result)
    sub = b.sub("ws")
    assert (sub.plan, sub.operations_remaining) == ("pro", 100_000)
    assert (sub.period_start, sub.period_end) == (utc("2026-04-01T00:00:00"), utc("2026-05-01T00:00:00"))
    b.at("2026-05-01T00:00:00")
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert lines(renewal) == [("plan_charge", D("190.00"))]
    assert b.sub("ws").operations_remaining == 150_000


def test_R16_R27_upgrade_keeping_the_cycle_caps_the_operations_credit_at_the_bill(book, tmp_path):
    """Core 150,000 unused on day 29 -> Teams 10,000: the credit is capped at the 1.14 charged."""
    b = subscribed(ops_book(book, tmp_path, upgrade_new_cycle="false"))
    b.at("2026-04-30T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="teams", tier=10_000))
    assert lines(invoice) == [("operations_credit", D("-1.14")), ("plan_charge", D("1.14"))]
    assert "capped" in invoice.lines[0]["formula"]


def test_R16_R11_annual_tier_upgrade_keeping_the_cycle_keeps_the_monthly_resets(book, tmp_path):
    """Core 120,000/year -> Core 240,000/year on Jul 16 without a new cycle: unused operations
    (6,000 this month + 8 months not yet reset = 86,000 at 105.90/120,000) are credited against
    the rest of the year (188.20 x 259/365); this month gets 20,000 x 16/31, and the resets go on monthly."""
    b = subscribed(ops_book(book, tmp_path, upgrade_new_cycle="false"), tier=120_000, interval="year")
    b.at("2026-07-16T00:00:00")
    assert b.do("ws", "record-usage", operations=4_000).ok
    invoice = only_invoice(b.do("ws", "change-plan", plan="core", tier=240_000, interval="year"))
    assert lines(invoice) == [("operations_credit", D("-75.90")), ("plan_charge", D("133.54"))]
    sub = b.sub("ws")
    assert (sub.ops_allotment, sub.ops_reset_at) == (20_000 * 16 // 31, utc("2026-08-01T00:00:00"))
    b.at("2026-08-01T00:00:00")
    assert b.sub("ws").ops_allotment == 20_000


def test_R16_built_in_operations_catalog_still_starts_a_new_cycle(book, tmp_path):
    b = subscribed(ops_book(book, tmp_path))
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="pro", tier=150_000).ok
    assert b.sub("ws").period_start == utc("2026-04-11T00:00:00")


# ------------------------------------------------------------------ R16 tier changes in the audit trail


def test_R16_tier_upgrade_on_the_same_interval_is_recorded_as_a_tier_change(book, tmp_path):
    """Core 120,000/yr -> Core 240,000/yr is a TierChanged (from 120,000), not an IntervalChanged."""
    b = subscribed(ops_book(book, tmp_path), tier=120_000, interval="year")
    result = b.do("ws", "change-plan", plan="core", tier=240_000, interval="year")
    assert "TierChanged" in types(result) and "IntervalChanged" not in types(result)
    (changed,) = [e for e in result.events if type(e).__name__ == "TierChanged"]
    assert (changed.from_tier, changed.tier, changed.interval) == (120_000, 240_000, "year")


@pytest.mark.parametrize("new_cycle", ["true", "false"])
def test_R16_tier_change_reads_right_in_the_audit_trail(book, db_url, tmp_path, new_cycle):
    from adapters.settings import eventsourcing_env
    from projections import audit_trail
    from projections.runner import Projections

    b = subscribed(ops_book(book, tmp_path, upgrade_new_cycle=new_cycle), tier=10_000)
    assert b.do("ws", "change-plan", plan="core", tier=40_000).ok
    assert b.do("ws", "change-plan", plan="core", tier=480_000, interval="year").ok
    with Projections(eventsourcing_env(db_url), source=b.ledger) as p:
        p.catch_up()
        with p.engine.connect() as conn:
            summaries = [r["summary"] for r in audit_trail.rows(conn, "ws") if r["event_type"] in (
                "TierChanged", "IntervalChanged")]
    assert summaries[0].startswith("TierChanged: Core 10,000 -> 40,000 operations/month, charged ")
    assert summaries[1].startswith("IntervalChanged: Core (yearly)")


def test_R16_same_monthly_operations_on_another_interval_is_an_interval_change(book, tmp_path):
    """Core 10,000/month -> Core 120,000/year grants the same 10,000 a month: an IntervalChanged."""
    b = subscribed(ops_book(book, tmp_path), tier=10_000)
    assert "IntervalChanged" in types(b.do("ws", "change-plan", plan="core", tier=120_000, interval="year"))


# ------------------------------------------------------------------ R19 usage beyond the allowance


def renewals(b, ws="ws"):
    return [e for e in b.ledger.workspace_events(ws) if type(e).__name__ == "InvoiceIssued" and e.purpose == "renewal"]


def test_R19_usage_beyond_the_allowance_is_refused_on_the_built_in_operations_catalog(book, tmp_path):
    """The audit's case: record-usage 1,000,000 on a 10,000 tier was accepted, 0 left, nothing
    billed. The built-in catalog blocks (`overage = "block"`): refused, recording nothing; usage
    that fits still counts; extra operations are sold in packs instead."""
    b = subscribed(ops_book(book, tmp_path), tier=10_000)
    result = refused(b, "ws", "operations_limit_exceeded", "record-usage", operations=1_000_000)
    assert "1,000,000 operations exceed the 10,000 left on Core" in result.error.message
    assert b.do("ws", "record-usage", operations=10_000).ok
    refused(b, "ws", "operations_limit_exceeded", "record-usage", operations=1)
    assert b.do("ws", "buy-operations", operations=10_000).ok
    assert b.do("ws", "record-usage", operations=10_000).ok
    assert b.sub("ws").operations_remaining == 0
    b.at("2026-05-01T00:00:00")
    assert lines(renewals(b)[-1]) == [("plan_charge", D("10.59"))]


def test_R19_members_are_blocked_too_and_a_block_records_nothing(book, tmp_path):
    from tests.conftest import MEMBER

    b = subscribed(ops_book(book, tmp_path), tier=10_000)
    refused(b, "ws", "operations_limit_exceeded", "record-usage", actor=MEMBER, operations=10_001)


def test_R19_billed_overage_is_its_own_line_on_the_next_invoice(book, tmp_path):
    """`overage = "bill"`: 12,000 used on a 10,000 tier (10.59): the 2,000 beyond are billed on
    May's renewal at 10.59/10,000 per operation = 2.12, as their own line."""
    b = subscribed(ops_book(book, tmp_path, overage='"bill"'), tier=10_000)
    used = b.do("ws", "record-usage", operations=12_000)
    assert used.ok and (used.events[0].overage, used.events[0].billed_rate_price) == (2_000, D("10.59"))
    b.at("2026-05-01T00:00:00")
    renewal = renewals(b)[-1]
    assert lines(renewal) == [("plan_charge", D("10.59")), ("operations_overage", D("2.12"))]
    assert renewal.lines[1]["formula"] == "(10.59 / 10,000 ops = 0.001059/op) x 2,000 = 2.118000 -> 2.12"
    assert renewal.amount_due == D("12.71")
    b.at("2026-06-01T00:00:00")
    assert lines(renewals(b)[-1]) == [("plan_charge", D("10.59"))]  # billed once


def test_R19_billed_overage_goes_on_the_invoice_of_a_new_cycle_and_a_final_invoice(book, tmp_path):
    """The next invoice may be an upgrade's (the cycle it closes) or, when the subscription ends,
    a final invoice: overage is never forgiven under `bill`."""
    b = subscribed(ops_book(book, tmp_path, overage='"bill"'), tier=10_000)
    assert b.do("ws", "record-usage", operations=15_000).ok
    up = only_invoice(b.do("ws", "change-plan", plan="core", tier=20_000))
    assert lines(up) == [("plan_charge", D("18.82")), ("operations_overage", D("5.30"))]
    assert b.do("ws", "record-usage", operations=21_000).ok
    assert b.do("ws", "cancel").ok
    b.at("2026-05-02T00:00:00")
    final = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert (final.purpose, lines(final)) == ("final", [("operations_overage", D("0.94"))])
    assert b.sub("ws").status == "canceled"


WITH_FREE = """id = "ops-free"
version = "1"
name = "Operations with a free plan"
currency = "USD"
[policy]
downgrade_timing = "{timing}"
upgrade_credit = "unused_operations"
overage = "bill"
[[plans]]
id = "nada"
name = "Nada"
rank = 0
kind = "free"
storage_gb = 1
[[plans]]
id = "basic"
name = "Basic"
rank = 1
kind = "paid"
storage_gb = 5
[[plans.tiers]]
operations = 10000
interval = "month"
price = "10.00"
"""


@pytest.mark.parametrize("timing", ["period_end", "immediate_credit", "immediate_new_cycle"])
def test_R19_billed_overage_is_billed_when_a_downgrade_moves_to_a_free_plan(book, tmp_path, timing):
    """Moving to a free plan ends billing as a cancel does: 1,000,000 operations beyond a 10,000
    tier at 10.00 are 1,000.00, billed on the downgrade's invoice (net of the unused time's credit)
    or, at the period's end, on a final invoice. Before, they were never billed."""
    path = tmp_path / "ops-free.toml"
    path.write_text(WITH_FREE.format(timing=timing))
    b = subscribed(book(str(path), "2026-04-01T00:00:00"), plan="basic", tier=10_000)
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "record-usage", operations=1_010_000).ok
    down = b.do("ws", "change-plan", plan="nada")
    assert down.ok
    b.at("2026-05-02T00:00:00")
    issued = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][1:]
    assert [line for invoice in issued for line in lines(invoice) if line[0] == "operations_overage"] == [
        ("operations_overage", D("1000.00"))]
    assert sum(invoice.amount_due for invoice in issued) == (D("1000.00") if timing == "period_end" else
                                                             D("1000.00") - D("7.00"))
    assert b.sub("ws").plan == "nada" and not b.sub("ws").open_invoices()


def test_R19_allowed_overage_is_recorded_and_not_billed(book, tmp_path):
    b = subscribed(ops_book(book, tmp_path, overage='"allow"'), tier=10_000)
    assert b.do("ws", "record-usage", operations=1_000_000).ok
    b.at("2026-05-01T00:00:00")
    assert lines(renewals(b)[-1]) == [("plan_charge", D("10.59"))]


def test_R19_a_move_to_a_free_plan_never_waits_on_the_overage_charge(book, tmp_path):
    """Billed on the downgrade's own invoice, the overage had to be paid before the move: without
    a card it was refused, with a declined one the customer stayed on the paid plan and was
    renewed. It goes on a final invoice collected after the move, dunned if it fails."""
    path = tmp_path / "ops-free.toml"
    path.write_text(WITH_FREE.format(timing="immediate_credit"))
    b = subscribed(book(str(path), "2026-04-01T00:00:00"), plan="basic", tier=10_000)
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "record-usage", operations=1_010_000).ok
    assert b.do("ws", "remove-payment-method", payment_method=VISA).ok
    down = b.do("ws", "change-plan", plan="nada")
    assert down.ok and {"DowngradeApplied", "InvoiceIssued", "PaymentFailed"} <= set(types(down)), types(down)
    assert b.sub("ws").plan == "nada"
    [final] = [i for i in b.sub("ws").open_invoices()]
    assert b.sub("ws").invoices[final]["amount_due"] == D("993.00")  # 1,000.00 less the 7.00 unused time
    b.at("2026-05-02T00:00:00")
    assert b.sub("ws").plan == "nada" and not [e for e in b.ledger.workspace_events("ws")
                                               if type(e).__name__ == "PeriodRenewed"]


@pytest.mark.parametrize("card", [DECLINED, "pm_card_authenticationRequired", None])
def test_R19_a_move_to_a_free_plan_is_answered_done_whatever_its_final_invoice_meets(book, tmp_path, card):
    """The move is made whatever the final invoice's collection meets (a decline, 3-D Secure, no
    card): the command's answer says so, asked again under its key too. Before, a decline or a
    3-D Secure wait answered "the change waits" though the plan had moved, and without a card the
    first answer was ok and the same key's replay said payment_failed."""
    path = tmp_path / "ops-free.toml"
    path.write_text(WITH_FREE.format(timing="immediate_credit"))
    b = subscribed(book(str(path), "2026-04-01T00:00:00"), plan="basic", tier=10_000)
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "record-usage", operations=1_010_000).ok
    if card:
        assert b.do("ws", "add-payment-method", payment_method=card).ok
    assert b.do("ws", "remove-payment-method", payment_method=VISA).ok
    down = b.do("ws", "change-plan", key="to-free", plan="nada")
    again = b.do("ws", "change-plan", key="to-free", plan="nada")
    assert (down.error, again.error, again.replayed) == (None, None, True)
    assert b.sub("ws").plan == "nada"
    assert [i["amount_due"] for i in b.sub("ws").invoices.values()] == [D("993.00")]


def test_R25_preview_of_a_move_to_a_free_plan_shows_its_final_invoice_paid(book, tmp_path):
    """A preview assumes every charge it asks for is paid: the final invoice too, not only a
    purchase's. Before, it showed the 993.00 open and the workspace past due."""
    path = tmp_path / "ops-free.toml"
    path.write_text(WITH_FREE.format(timing="immediate_credit"))
    b = subscribed(book(str(path), "2026-04-01T00:00:00"), plan="basic", tier=10_000)
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "record-usage", operations=1_010_000).ok
    preview = b.preview("ws", "change-plan", plan="nada")
    assert "PaymentSucceeded" in types(preview)
    assert (preview.subscription.plan, preview.subscription.status) == ("nada", "active")
    assert not preview.subscription.open_invoices()
    applied = b.do("ws", "change-plan", plan="nada")
    assert types(applied) == types(preview)


def suspended_on_the_free_plan(book, tmp_path, timing="immediate_credit"):
    """Basic, 10,000 operations over its tier, moved to the free plan on a declined card: its
    final invoice retried on days 3 and 5, then the workspace suspended (May 10)."""
    path = tmp_path / "ops-free.toml"
    path.write_text(WITH_FREE.format(timing=timing).replace(
        'overage = "bill"', 'overage = "bill"\ndunning_retry_days = [3, 5]\ndunning_final_action = "suspend"'))
    b = subscribed(book(str(path), "2026-04-01T00:00:00"), plan="basic", tier=10_000)
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "record-usage", operations=20_000).ok
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    assert b.do("ws", "change-plan", plan="nada").ok
    b.at("2026-05-10T00:00:00")
    return b


@pytest.mark.parametrize("timing", ["immediate_credit", "period_end"])
def test_R8_R19_a_free_plan_workspace_suspended_over_its_final_invoice_is_reactivated_without_a_period(
        book, tmp_path, timing):
    """Suspended on the free plan over its unpaid final invoice, then paid: active again, on the
    free plan, with nothing to renew. Before, reactivation anchored a period on a plan without
    an interval: its workspace's due items never ended, and every read model stopped on it."""
    b = suspended_on_the_free_plan(book, tmp_path, timing)
    assert (b.sub("ws").plan, b.sub("ws").status) == ("nada", "suspended")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    b.at("2026-07-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.status, sub.open_invoices(), sub.next_due_at()) == ("nada", "active", [], None)


def test_R8_R19_a_free_plan_reactivation_recorded_with_a_period_anchors_none(book, tmp_path, monkeypatch):
    """Such a fact, recorded before the fix, made its workspace forever due: applied now, it anchors nothing."""
    from domain.subscription import dunning
    from domain.subscription.events import WorkspaceReactivated

    def as_before(sub, meta, at):  # the old rule: a restart wherever the period had ended, or was none
        if sub.status == "suspended" and not sub.open_invoices():
            sub.trigger_event(WorkspaceReactivated, **meta, restart_at=at, status=None)

    b = suspended_on_the_free_plan(book, tmp_path)
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    monkeypatch.setattr(dunning, "after_payment", as_before)
    assert b.do("ws", "pay-invoice").ok
    monkeypatch.undo()
    assert [e.restart_at for e in b.ledger.workspace_events("ws") if type(e).__name__ == "WorkspaceReactivated"]
    b.at("2026-07-01T00:00:00")
    assert (b.sub("ws").plan, b.sub("ws").status, b.sub("ws").next_due_at()) == ("nada", "active", None)
