"""Seed 004 rules on the `operations` catalog: tiers, unused-operations credit, carry-over (R16, R18)."""

from decimal import Decimal

import pytest

from domain.catalog import load_catalog
from domain.pricing import direction


def subscribed(book, plan="core", tier=150_000, interval="month", start="2026-03-01T00:00:00"):
    b = book("operations", start)
    b.do("ops", "add-payment-method", payment_method="pm_card_visa")
    assert b.do("ops", "subscribe", plan=plan, tier=tier, interval=interval).ok
    return b


def only_invoice(result):
    (invoice,) = result.invoices()
    return invoice


def test_R16_upgrade_credits_unused_operations_at_old_price_per_operation(book):
    """Seed 004: Core $113.85 / 150,000 ops = $0.000759/op; 160,000 unused -> $121.44."""
    b = subscribed(book)
    assert b.do("ops", "buy-operations", operations=10_000).ok
    assert b.sub("ops").operations_remaining == 160_000
    result = b.do("ops", "change-plan", plan="pro", tier=150_000)
    invoice = only_invoice(result)
    assert [(line["kind"], line["amount"]) for line in invoice.lines] == [
        ("operations_credit", Decimal("-121.44")),
        ("plan_charge", Decimal("190.00")),
    ]
    assert invoice.amount_due == Decimal("68.56")
    assert "OperationsConvertedToCredit" in [type(e).__name__ for e in result.events]
    assert b.sub("ops").operations_remaining == 150_000


def test_R16_R27_operations_credit_capped_at_the_new_bill(book):
    """The credit cannot exceed the bill; in 004 the rest is forfeited, not kept as balance."""
    b = subscribed(book)
    invoice = only_invoice(b.do("ops", "change-plan", plan="teams", tier=10_000))
    credit = next(line for line in invoice.lines if line["kind"] == "operations_credit")
    assert credit["amount"] == Decimal("-34.12")
    assert "capped" in credit["formula"]
    assert invoice.amount_due == Decimal("0.00")
    assert b.sub("ops").billing_credit == Decimal("0")


def test_R16_upgrade_starts_a_new_cycle_at_the_change(book):
    b = subscribed(book)
    b.at("2026-03-11T00:00:00")
    assert b.do("ops", "change-plan", plan="core", tier=150_000 * 12, interval="year").ok
    sub = b.sub("ops")
    assert (sub.period_start.isoformat(), sub.period_end.isoformat()) == (
        "2026-03-11T00:00:00+00:00", "2027-03-11T00:00:00+00:00")


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        (("core", "month", 150_000), ("teams", "month", 10_000), "upgrade"),   # higher plan, any tier
        (("pro", "month", 10_000), ("pro", "month", 150_000), "upgrade"),      # higher tier, same plan
        (("pro", "month", 10_000), ("pro", "year", 120_000), "upgrade"),       # monthly -> annual, equal tier
        (("teams", "month", 10_000), ("core", "month", 150_000), "downgrade"),  # lower plan, any tier
        (("pro", "month", 150_000), ("pro", "month", 10_000), "downgrade"),    # lower tier
        (("pro", "year", 240_000), ("pro", "month", 10_000), "downgrade"),     # annual -> monthly, lower tier
    ],
)
def test_R16_R18_what_counts_as_upgrade_or_downgrade(current, target, expected):
    catalog = load_catalog("operations")

    def resolve(plan_id, interval, ops):
        plan = catalog.plan(plan_id)
        return plan, interval, plan.tier(ops, interval)

    assert direction(*resolve(*current), *resolve(*target)) == expected


def test_R18_downgrade_carries_unused_operations_into_the_new_plan(book):
    """Seed 004: 10,000 left + a 40,000 tier = 50,000 in the first month."""
    b = subscribed(book, plan="pro", tier=150_000)
    assert b.do("ops", "record-usage", operations=140_000).ok
    result = b.do("ops", "change-plan", plan="pro", tier=40_000)
    assert result.ok
    assert "OperationsCarriedOver" in [type(e).__name__ for e in result.events]
    assert b.sub("ops").operations_remaining == 50_000


def test_R18_carried_operations_last_thirty_days_on_a_monthly_plan(book):
    b = subscribed(book, plan="pro", tier=150_000)
    b.do("ops", "record-usage", operations=140_000)
    b.do("ops", "change-plan", plan="pro", tier=40_000)
    b.at("2026-03-30T23:00:00")
    assert b.sub("ops").ops_carried == 10_000
    b.at("2026-03-31T00:00:00")
    assert b.sub("ops").ops_carried == 0


def test_R18_annual_plan_resets_operations_monthly_and_extra_operations_expire(book):
    b = subscribed(book, plan="core", tier=120_000, interval="year")
    assert b.sub("ops").operations_remaining == 10_000
    b.do("ops", "buy-operations", operations=10_000)
    b.do("ops", "record-usage", operations=5_000)
    assert b.sub("ops").operations_remaining == 15_000
    b.at("2026-04-01T00:00:00")
    sub = b.sub("ops")
    assert (sub.ops_allotment, sub.ops_extra) == (10_000, 0)
    assert sub.period_end.isoformat() == "2027-03-01T00:00:00+00:00"


def test_R18_downgrade_to_a_one_team_plan_requires_choosing_the_team(book):
    b = subscribed(book, plan="teams", tier=40_000)
    version = b.sub("ops").version
    refused = b.do("ops", "change-plan", plan="pro", tier=40_000)
    assert refused.error.code == "team_choice_required"
    assert b.sub("ops").version == version
    assert b.do("ops", "change-plan", plan="pro", tier=40_000, keep_team="design").ok
    assert b.sub("ops").kept_team == "design"


def test_extra_operations_are_sold_in_packs_at_the_plan_price_per_operation(book):
    b = subscribed(book, plan="core", tier=10_000)
    assert b.do("ops", "buy-operations", operations=5_000).error.code == "invalid_request"
    invoice = only_invoice(b.do("ops", "buy-operations", operations=20_000))
    assert invoice.lines[0]["amount"] == Decimal("21.18")  # 10.59 / 10,000 x 20,000


def test_unknown_tier_is_a_clear_error(book):
    b = subscribed(book)
    result = b.do("ops", "change-plan", plan="pro", tier=12_345)
    assert result.error.code == "invalid_request"
    assert "12,345" in result.error.message


def test_R18_monthly_resets_of_an_annual_plan_keep_the_anchor_day(book):
    """Anchored on Jan 31, resets fall on Feb 28, then Mar 31: the clamp never drifts."""
    b = subscribed(book, plan="core", tier=120_000, interval="year", start="2026-01-31T00:00:00")
    b.at("2026-02-28T00:00:00")
    assert b.sub("ops").ops_reset_at.isoformat() == "2026-03-31T00:00:00+00:00"
    b.do("ops", "record-usage", operations=1_000)
    b.at("2026-03-31T00:00:00")
    assert b.sub("ops").operations_remaining == 10_000
    assert b.sub("ops").ops_reset_at.isoformat() == "2026-04-30T00:00:00+00:00"
