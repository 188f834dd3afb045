"""Pure unit tests of periods, proration and rounding (R13, R14, R26, R27): no database."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from domain.catalog import Catalog, Policy, load_catalog
from domain.money import fmt, parse_amount, round_half_up
from domain.periods import Period, add_months, days_between, period_containing, period_number
from domain.pricing import (
    Priced, ai_credit_revenue, full_charge, one_time_charge, prorated_charge, remaining_fraction, totals,
    unused_time_credit,
)

D = Decimal
DAY = Policy(proration="day")
SECOND = Policy(proration="second")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


APRIL = Period(at("2026-04-01T00:00:00"), at("2026-05-01T00:00:00"))
PRO = Priced("plan", "Pro (monthly)", D("19.00"), 1)
TEAM = Priced("plan", "Team (monthly)", D("49.00"), 1)


# ------------------------------------------------------------------ calendar periods


def test_month_end_anchor_clamps_jan_31_feb_28_mar_31():
    anchor = at("2026-01-31T09:00:00")
    starts = [period_number(anchor, "month", n).start for n in range(4)]
    assert starts == [at("2026-01-31T09:00:00"), at("2026-02-28T09:00:00"),
                      at("2026-03-31T09:00:00"), at("2026-04-30T09:00:00")]


def test_month_end_anchor_in_a_leap_year_lands_on_feb_29():
    anchor = at("2028-01-31T00:00:00")
    assert period_number(anchor, "month", 1) == Period(at("2028-02-29T00:00:00"), at("2028-03-31T00:00:00"))
    assert period_number(anchor, "month", 1).days() == 31
    assert period_number(anchor, "month", 0).days() == 29


def test_feb_29_anniversary_clamps_to_feb_28_and_returns_in_the_next_leap_year():
    anchor = at("2028-02-29T00:00:00")
    assert [period_number(anchor, "year", n).start.date().isoformat() for n in range(5)] == [
        "2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]


def test_add_months_across_year_end():
    assert add_months(at("2026-11-30T00:00:00"), 3) == at("2027-02-28T00:00:00")
    assert add_months(at("2026-12-31T00:00:00"), 1) == at("2027-01-31T00:00:00")
    assert add_months(at("2026-03-31T00:00:00"), -1) == at("2026-02-28T00:00:00")


@pytest.mark.parametrize(("year", "days"), [(2026, 365), (2027, 365), (2028, 366), (2100, 365), (2000, 366)])
def test_years_have_365_or_366_days(year, days):
    assert period_number(at(f"{year}-01-01T00:00:00"), "year", 0).days() == days


@pytest.mark.parametrize(("month", "days"), [("2026-02", 28), ("2028-02", 29), ("2026-04", 30), ("2026-05", 31)])
def test_months_have_their_real_length(month, days):
    assert period_number(at(f"{month}-01T00:00:00"), "month", 0).days() == days


def test_period_containing_finds_the_period_and_its_number():
    anchor = at("2026-01-31T00:00:00")
    assert period_containing(anchor, "month", at("2026-03-15T00:00:00")) == (
        1, Period(at("2026-02-28T00:00:00"), at("2026-03-31T00:00:00")))
    n, period = period_containing(anchor, "month", at("2026-03-31T00:00:00"))
    assert (n, period.start) == (2, at("2026-03-31T00:00:00"))  # start included, end excluded
    with pytest.raises(ValueError):
        period_containing(anchor, "month", at("2026-01-30T00:00:00"))


def test_days_between_counts_calendar_days_start_included_end_excluded():
    assert days_between(at("2026-04-11T23:59:59"), at("2026-05-01T00:00:00")) == 20
    assert days_between(at("2026-04-11T00:00:00"), at("2026-04-11T18:00:00")) == 0


# ------------------------------------------------------------------ rounding


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("12.665", "12.67"), ("-12.665", "-12.67"), ("12.664999", "12.66"), ("0.005", "0.01"),
     ("-0.005", "-0.01"), ("32.666666", "32.67"), ("20", "20.00")],
)
def test_half_up_rounding_to_the_cent(amount, expected):
    assert round_half_up(D(amount), "USD") == D(expected)
    assert str(round_half_up(D(amount), "USD")) == expected


def test_rounding_follows_the_currency_minor_unit():
    assert round_half_up(D("1234.5"), "JPY") == D("1235")
    assert round_half_up(D("1.2345"), "KWD") == D("1.235")
    assert fmt(D("1E+1"), "USD") == "10.00"
    with pytest.raises(ValueError):
        round_half_up(D("1"), "XXX")


def test_floats_are_refused_as_amounts():
    with pytest.raises(ValueError):
        parse_amount(12.67)
    assert parse_amount("12.67") == D("12.67")


def test_each_line_is_rounded_once_not_the_total():
    """R13/R26: three lines of 1/3 cent-fractions round per line: 6.33 + 6.33 + 6.33 = 18.99."""
    third = Priced("plan", "Plan", D("19.00"), 1)
    lines = [prorated_charge(third, APRIL, at("2026-04-21T00:00:00"), DAY, "USD", "plan_charge")] * 3
    assert [line.amount for line in lines] == [D("6.33")] * 3
    assert totals(lines, D(0), DAY).subtotal == D("18.99")


# ------------------------------------------------------------------ proration


def test_R13_seed_example_lines():
    """R13: Pro $19 -> Team $49, 10 days into a 30-day cycle: credit 12.67, charge 32.67, due 20.00."""
    ten_days_in = at("2026-04-11T00:00:00")
    credit = unused_time_credit(PRO, APRIL, ten_days_in, DAY, "USD", "plan_credit", D("19.00"))
    charge = prorated_charge(TEAM, APRIL, ten_days_in, DAY, "USD", "plan_charge")
    assert (credit.amount, charge.amount) == (D("-12.67"), D("32.67"))
    assert credit.formula == "19.00 x 1 x 20/30 days = 12.666667 -> 12.67"
    assert (credit.period_start, credit.period_end) == (ten_days_in, APRIL.end)
    t = totals([credit, charge], D(0), DAY)
    assert (t.subtotal, t.credit_applied, t.amount_due) == (D("20.00"), D(0), D("20.00"))


def test_day_and_second_proration_differ_as_the_policy_says():
    """Day: noon on the 11th still leaves 20 whole days; second: 19.5 days of 30."""
    noon = at("2026-04-11T12:00:00")
    day = remaining_fraction(APRIL, noon, DAY)
    second = remaining_fraction(APRIL, noon, SECOND)
    assert (day.num, day.den, day.unit) == (20, 30, "days")
    assert (second.num, second.den, second.unit) == (19 * 86400 + 43200, 30 * 86400, "seconds")
    assert prorated_charge(TEAM, APRIL, noon, DAY, "USD", "plan_charge").amount == D("32.67")
    assert prorated_charge(TEAM, APRIL, noon, SECOND, "USD", "plan_charge").amount == D("31.85")


def test_second_proration_is_a_catalog_policy_override():
    data = load_catalog("forms").model_dump()
    data["policy"]["proration"] = "second"
    seconds = Catalog.model_validate(data)
    assert (load_catalog("forms").policy.proration, seconds.policy.proration) == ("day", "second")
    noon = at("2026-04-11T12:00:00")
    credit = unused_time_credit(PRO, APRIL, noon, seconds.policy, "USD", "plan_credit", D("19.00"))
    assert credit.amount == D("-12.35")


def test_fraction_is_bounded_to_the_period():
    assert remaining_fraction(APRIL, APRIL.start, DAY).num == 30
    assert remaining_fraction(APRIL, APRIL.end, DAY).num == 0
    assert remaining_fraction(APRIL, at("2026-06-01T00:00:00"), SECOND).num == 0


@pytest.mark.parametrize(("year", "den", "credit"), [(2027, 365, "96.30"), (2028, 366, "96.04")])
def test_annual_proration_uses_365_or_366_days(year, den, credit):
    """R14: Pro $190/year changed on Jun 30: 185 days remain, of 365 or of 366."""
    year_period = period_number(at(f"{year}-01-01T00:00:00"), "year", 0)
    change = at(f"{year}-06-30T00:00:00")
    item = Priced("plan", "Pro (yearly)", D("190.00"), 1)
    line = unused_time_credit(item, year_period, change, DAY, "USD", "plan_credit", D("190.00"))
    assert line.amount == -D(credit)
    assert f"185/{den} days" in line.formula


def test_per_seat_item_prorates_every_seat():
    seats = Priced("plan", "Team per seat", D("8.00"), 5)
    assert prorated_charge(seats, APRIL, at("2026-04-11T00:00:00"), DAY, "USD", "plan_charge").amount == D("26.67")
    assert full_charge(seats, APRIL, "USD", "plan_charge").amount == D("40.00")


def test_one_time_charges_are_never_prorated():
    """R23: an AI credit pack bought on the last day costs its full price."""
    line = one_time_charge("ai_credit_pack", "1,000 AI credits", D("10.00"), 1, "USD", at("2026-04-30T00:00:00"))
    assert (line.amount, line.period_end) == (D("10.00"), None)


# ------------------------------------------------------------------ credit caps


def test_R27_credit_for_unused_time_is_capped_at_what_was_charged_net():
    line = unused_time_credit(PRO, APRIL, at("2026-04-11T00:00:00"), DAY, "USD", "plan_credit", D("5.00"))
    assert line.amount == D("-5.00")
    assert "capped at 5.00" in line.formula
    assert unused_time_credit(PRO, APRIL, at("2026-04-11T00:00:00"), DAY, "USD", "plan_credit", D("0")) is None
    assert unused_time_credit(PRO, APRIL, at("2026-04-11T00:00:00"), DAY, "USD", "plan_credit", D("-3")) is None


def test_R13_two_consecutive_upgrades_in_one_period_never_over_credit():
    """Pro -> Team on day 1, Team -> a $99 plan the same day: the second credit is capped at what
    April's plan was charged net of the first credit, and the credits never exceed the charges."""
    day_one = at("2026-04-01T00:00:00")
    charged = D("19.00")
    first_credit = unused_time_credit(PRO, APRIL, day_one, DAY, "USD", "plan_credit", charged)
    assert first_credit.amount == D("-19.00")
    charged += first_credit.amount  # 0.00 left of April's Pro charge
    team_charge = prorated_charge(TEAM, APRIL, day_one, DAY, "USD", "plan_charge")
    charged += team_charge.amount   # 49.00
    pricier_team = Priced("plan", "Team at an old higher price", D("60.00"), 1)
    second_credit = unused_time_credit(pricier_team, APRIL, day_one, DAY, "USD", "plan_credit", charged)
    assert second_credit.amount == D("-49.00")
    credits = -(first_credit.amount + second_credit.amount)
    assert credits == D("68.00") == D("19.00") + team_charge.amount


# ------------------------------------------------------------------ AI credit revenue (R23)


def test_R23_purchased_ai_credits_are_recognised_pro_rata_rounded_half_up_once():
    amount, formula = ai_credit_revenue(D("10.00"), 1, 16, "USD")
    assert amount == D("0.63")  # 0.625 exactly: half-up, not half-even
    assert formula == "10.00 held x 1/16 credits = 0.625000 -> 0.63"
    assert ai_credit_revenue(D("10.00"), 700, 1000, "USD")[0] == D("7.00")
    assert ai_credit_revenue(D("1000"), 1, 3, "JPY")[0] == D("333")


def test_R23_spending_the_last_purchased_credits_recognises_all_that_is_held():
    assert ai_credit_revenue(D("3.34"), 334, 334, "USD") == (D("3.34"), "all 334 purchased credits used = 3.34 held")
    assert ai_credit_revenue(D("3.34"), 500, 334, "USD")[0] == D("3.34")


def test_R23_a_pack_is_recognised_in_full_and_never_more_however_its_credits_are_spent():
    held, purchased, recognised = D("10.00"), 1000, []
    for used in (333, 333, 1, 333):
        amount, _ = ai_credit_revenue(held, used, purchased, "USD")
        recognised.append(amount)
        held, purchased = held - amount, purchased - used
    assert recognised == [D("3.33"), D("3.33"), D("0.01"), D("3.33")]
    assert sum(recognised) == D("10.00") and held == 0


def test_R23_no_purchased_credits_used_recognises_nothing():
    assert ai_credit_revenue(D("10.00"), 0, 1000, "USD") == (D(0), "no purchased credits used")


# ------------------------------------------------------------------ totals and billing credit


def test_R27_balance_applied_never_exceeds_the_bill():
    bill = [full_charge(PRO, APRIL, "USD", "plan_charge")]
    t = totals(bill, D("50.00"), DAY)
    assert (t.subtotal, t.credit_applied, t.amount_due, t.credit_issued) == (D("19.00"), D("19.00"), D("0.00"), D(0))
    t = totals(bill, D("5.00"), DAY)
    assert (t.credit_applied, t.amount_due) == (D("5.00"), D("14.00"))
    t = totals(bill, D("-5.00"), DAY)
    assert (t.credit_applied, t.amount_due) == (D(0), D("19.00"))


def test_R10_net_negative_bill_becomes_billing_credit_never_a_payment():
    credit = unused_time_credit(TEAM, APRIL, at("2026-04-11T00:00:00"), DAY, "USD", "plan_credit", D("49.00"))
    t = totals([credit], D("7.00"), DAY)
    assert (t.subtotal, t.credit_applied, t.amount_due, t.credit_issued) == (D("-32.67"), D(0), D(0), D("32.67"))
    forfeit = totals([credit], D(0), Policy(credit_overflow="forfeit"))
    assert (forfeit.credit_issued, forfeit.credit_forfeited) == (D(0), D("32.67"))


def test_catalog_prices_refuse_floats_so_no_cent_is_approximated():
    from domain.catalog import CatalogError, parse_catalog

    text = ('id = "x"\nversion = "1"\nname = "X"\ncurrency = "USD"\n[[plans]]\nid = "a"\nname = "A"\n'
            'rank = 0\nkind = "paid"\nstorage_gb = 1\nprices = { month = 19.99 }\n')
    with pytest.raises(CatalogError, match=r'plans\[0\]\.prices\.month = 19\.99: a float cannot hold cents exactly; '
                                           r'write "19\.99"'):
        parse_catalog(text)
