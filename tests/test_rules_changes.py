"""Plan changes on the forms (seed 003) and workspace (seed 000) catalogs: preconditions (R5-R8),
upgrades (R11-R15), scheduled downgrades and the boundary (R17, R19), failed payments (R8, R20),
over-seat warnings (R24) and previews (R25)."""

from __future__ import annotations

import pytest

from tests.conftest import utc
from tests.support import (
    D, DECLINED, VISA, catalog_variant, forms_on, lines, only_invoice, refused, state, types, version,
    workspace_on,
)

# ------------------------------------------------------------------ R5 seats


def test_R5_downgrade_refused_while_members_exceed_seats(book):
    """R5 (003): Team -> Pro (3 seats) is refused with 5 active members; nothing is scheduled."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "set-members", members=5).ok
    result = refused(b, "ws", "seat_limit_exceeded", "change-plan", plan="pro")
    assert "5 active members" in result.error.message
    refused(b, "ws", "seat_limit_exceeded", "change-plan", plan="free")
    assert b.sub("ws").scheduled is None
    assert b.do("ws", "set-members", members=3).ok
    assert types(b.do("ws", "change-plan", plan="pro")) == ["DowngradeScheduled"]


def test_R5_per_seat_downgrade_refused_while_members_exceed_target_seats(book):
    """R5 (000): Business 10 seats -> Team 5 seats with 8 members, or -> Free (3 seats), is refused."""
    b = workspace_on(book, plan="business", seats=10)
    b.do("ws", "set-members", members=8)
    refused(b, "ws", "seat_limit_exceeded", "change-plan", plan="team", seats=5)
    refused(b, "ws", "seat_limit_exceeded", "change-plan", plan="free")
    assert b.do("ws", "change-plan", plan="team", seats=8).ok


def test_R5_seat_reduction_refused_below_active_members(book):
    b = workspace_on(book, seats=10)
    b.do("ws", "set-members", members=8)
    refused(b, "ws", "seat_limit_exceeded", "set-seats", seats=7)
    assert b.do("ws", "set-seats", seats=8).ok


# ------------------------------------------------------------------ R6 storage


def test_R6_downgrade_refused_while_storage_exceeds_target(book):
    """R6 (003): 50 GB used does not fit Pro's 10 GB."""
    b = forms_on(book, plan="team")
    b.do("ws", "report-storage", gb=D("50"))
    result = refused(b, "ws", "storage_limit_exceeded", "change-plan", plan="pro")
    assert "50 GB" in result.error.message and "10 GB" in result.error.message
    b.do("ws", "report-storage", gb=D("10"))
    assert b.do("ws", "change-plan", plan="pro").ok


def test_R6_storage_add_on_counts_toward_the_target_plan_storage(book):
    """R6 (000): 150 GB does not fit Team's 100 GB, but fits Team + a 100 GB add-on."""
    b = workspace_on(book, plan="business", seats=5)
    b.do("ws", "report-storage", gb=D("150"))
    refused(b, "ws", "storage_limit_exceeded", "change-plan", plan="team")
    assert b.do("ws", "set-storage-addon", addon="storage-100gb").ok
    result = b.do("ws", "change-plan", plan="team")
    assert result.ok
    assert b.sub("ws").storage_limit(b.ledger.catalog_for(b.sub("ws"))) == 200


# ------------------------------------------------------------------ R7 payment method


def test_R7_upgrade_needs_a_payment_method_on_file(book):
    """R7: Free -> Pro without a card is refused; with one it goes through."""
    b = book("forms")
    assert b.do("ws", "subscribe", plan="free").ok
    refused(b, "ws", "payment_method_required", "change-plan", plan="pro")
    assert b.sub("ws").plan == "free"
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "change-plan", plan="pro").ok


def test_R7_paid_checkout_needs_a_payment_method(book):
    b = book("workspace")
    refused(b, "ws", "payment_method_required", "subscribe", plan="team", seats=3)
    assert b.sub("ws") is None


def test_R7_trial_conversion_needs_a_payment_method(book):
    b = book("workspace")
    assert b.do("ws", "subscribe", plan="trial").ok
    refused(b, "ws", "payment_method_required", "change-plan", plan="team", seats=3)
    assert b.sub("ws").status == "trialing"


@pytest.mark.parametrize(("command", "args"), [("set-seats", {"seats": 8}),
                                              ("set-storage-addon", {"addon": "storage-100gb"}),
                                              ("change-plan", {"plan": "team", "seats": 8})])
def test_R7_paid_seat_and_add_on_changes_need_a_payment_method(book, command, args):
    """R7 (000): a change that charges now is refused up front without a card, recording nothing."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "remove-payment-method", payment_method=VISA).ok
    refused(b, "ws", "payment_method_required", command, **args)


def test_R7_removing_the_only_card_blocks_the_next_upgrade(book):
    b = forms_on(book)
    assert b.do("ws", "remove-payment-method", payment_method=VISA).ok
    refused(b, "ws", "payment_method_required", "change-plan", plan="team")


# ------------------------------------------------------------------ R8, R20 open invoice


def declined_renewal(b, ws="ws"):
    """Make the newest card a declining one and cross the period end: the renewal stays open."""
    assert b.do(ws, "add-payment-method", payment_method=DECLINED).ok
    end = b.sub(ws).period_end
    b.at(end.isoformat())
    sub = b.sub(ws)
    assert sub.status == "past_due"
    assert sub.open_invoice is not None
    return sub.open_invoice


def test_R8_declined_renewal_leaves_an_open_invoice_and_past_due(book):
    b = forms_on(book, plan="team")
    invoice = declined_renewal(b)
    events = b.ledger.workspace_events("ws")
    assert [type(e).__name__ for e in events[-4:]] == ["PeriodRenewed", "InvoiceIssued", "ChargeRequested", "PaymentFailed"]
    (issued,) = [e for e in events if type(e).__name__ == "InvoiceIssued" and e.invoice_id == invoice]
    assert issued.purpose == "renewal"
    assert lines(issued) == [("plan_charge", D("49.00"))]
    assert state(b, "ws")["open_invoice"] == invoice


@pytest.mark.parametrize(("plan", "way"), [("free", "down"), ("pro", "down"), ("team", "interval-up")])
def test_R8_R20_plan_change_refused_while_an_invoice_is_open_until_it_is_paid(book, plan, way):
    """R8/R20: up or down, the change waits for the open invoice; a downgrade is no workaround."""
    b = forms_on(book, plan="team")
    invoice = declined_renewal(b)
    args = {"plan": plan, "interval": "year"} if way == "interval-up" else {"plan": plan}
    result = refused(b, "ws", "open_invoice", "change-plan", **args)
    assert invoice in result.error.message
    paid = b.do("ws", "pay-invoice")
    assert paid.error.code == "payment_failed"
    assert types(paid) == ["ChargeRequested", "PaymentFailed"]
    refused(b, "ws", "open_invoice", "change-plan", **args)
    b.do("ws", "add-payment-method", payment_method=VISA)
    paid = b.do("ws", "pay-invoice", invoice=invoice)
    assert paid.ok and types(paid) == ["ChargeRequested", "PaymentSucceeded"]
    assert paid.events[-1].amount == D("49.00")
    assert (b.sub("ws").status, b.sub("ws").open_invoice) == ("active", None)
    assert b.do("ws", "change-plan", **args).ok


def test_R8_R20_workspace_seat_and_plan_changes_wait_for_the_open_invoice(book):
    """R8/R20 (000): Business -> Team, fewer seats, more seats: all refused until paid."""
    b = workspace_on(book, plan="business", seats=4)
    declined_renewal(b)
    refused(b, "ws", "open_invoice", "change-plan", plan="team")
    refused(b, "ws", "open_invoice", "change-plan", plan="free")
    refused(b, "ws", "open_invoice", "set-seats", seats=2)
    refused(b, "ws", "open_invoice", "set-seats", seats=9)
    refused(b, "ws", "open_invoice", "set-storage-addon", addon="storage-100gb")
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "pay-invoice").ok
    assert b.do("ws", "change-plan", plan="team").ok


# ------------------------------------------------------------------ R11, R12 upgrades


def test_R11_upgrade_applies_immediately_with_the_new_limits_and_features(book):
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    before = state(b, "ws")
    assert (before["seats"], before["storage_limit_gb"], "webhooks" in before["features"]) == (3, 10, False)
    result = b.do("ws", "change-plan", plan="team")
    assert types(result) == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    after = state(b, "ws")
    assert (after["plan"], after["seats"], after["storage_limit_gb"]) == ("team", 10, 100)
    assert {"webhooks", "ai_insights"} <= set(after["features"])
    assert (after["period_start"], after["period_end"]) == ("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")


def test_R11_upgraded_plan_renews_at_the_new_price(book):
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team")
    b.at("2026-05-01T00:00:00")
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert (renewal.purpose, lines(renewal)) == ("renewal", [("plan_charge", D("49.00"))])


def test_R12_declined_upgrade_records_the_failure_and_keeps_the_plan(book):
    """R12: the newest card declines -> `payment_failed`, an audit event, no partial state."""
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    before = b.sub("ws")
    result = b.do("ws", "change-plan", plan="team")
    assert not result.ok
    assert result.error.code == "payment_failed"
    assert types(result) == ["ChargeRequested", "UpgradePaymentFailed"]
    failed = result.events[-1]
    assert (failed.plan, failed.amount, failed.decline_code) == ("team", D("20.00"), "card_declined")
    after = b.sub("ws")
    assert after.version == before.version + 2
    assert (after.plan, after.prices, after.invoices, after.billing_credit, after.charged) == (
        "pro", before.prices, before.invoices, before.billing_credit, before.charged)
    assert after.status == "active" and after.open_invoice is None


def test_R12_declined_trial_conversion_keeps_the_trial(book):
    b = book("workspace")
    b.do("ws", "subscribe", plan="trial")
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    result = b.do("ws", "change-plan", plan="team", seats=3)
    assert result.error.code == "payment_failed"
    assert types(result) == ["ChargeRequested", "UpgradePaymentFailed"]
    sub = b.sub("ws")
    assert (sub.plan, sub.status, sub.ai_granted) == ("trial", "trialing", 0)


# ------------------------------------------------------------------ R13 time proration


def test_R13_seed_example_pro_to_team_ten_days_in(book):
    """R13: credit 12.67, charge 32.67, due 20.00 as separate lines."""
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(invoice) == [("plan_credit", D("-12.67")), ("plan_charge", D("32.67"))]
    assert (invoice.subtotal, invoice.credit_applied, invoice.amount_due) == (D("20.00"), D("0"), D("20.00"))


def test_R13_thirty_one_day_month_uses_its_real_length(book):
    """R13: 10 days into May (31 days): 21/31 remaining -> 12.87 credit, 33.19 charge."""
    b = forms_on(book, start="2026-05-01T00:00:00")
    b.at("2026-05-11T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(invoice) == [("plan_credit", D("-12.87")), ("plan_charge", D("33.19"))]
    assert invoice.amount_due == D("20.32")


def test_R13_day_granularity_counts_whole_calendar_days(book):
    """R13 (day policy): at noon on day 11 the remaining time is still 20 whole days."""
    b = forms_on(book)
    b.at("2026-04-11T12:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(invoice) == [("plan_credit", D("-12.67")), ("plan_charge", D("32.67"))]


def test_R13_second_granularity_is_a_catalog_policy(book, tmp_path):
    """R13 with `proration = "second"`: 19.5 of 30 days remain -> 12.35 credit, 31.85 charge."""
    b = book(catalog_variant(tmp_path, "forms", "forms-seconds", proration='"second"'))
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.do("ws", "subscribe", plan="pro")
    b.at("2026-04-11T12:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(invoice) == [("plan_credit", D("-12.35")), ("plan_charge", D("31.85"))]
    assert invoice.amount_due == D("19.50")
    assert "seconds" in invoice.lines[0]["formula"]


def test_R13_per_seat_upgrade_prorates_each_seat(book):
    """R13 (000): Team 5 seats -> Business 5 seats, 20 of 30 days left: -26.67 + 50.00 = 23.33."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="business"))
    assert lines(invoice) == [("plan_credit", D("-26.67")), ("plan_charge", D("50.00"))]
    assert invoice.amount_due == D("23.33")
    assert [line["quantity"] for line in invoice.lines] == [5, 5]


def test_R13_two_upgrades_in_one_period_never_credit_more_than_was_charged(book):
    """R13: Pro -> Team -> Team annual in one April; credits for April never exceed April's charges."""
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    first = only_invoice(b.do("ws", "change-plan", plan="team"))
    second = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    april = [line for inv in (first, second) for line in inv.lines
             if line["period_end"] == utc("2026-05-01T00:00:00")]
    charged = D("19.00") + sum(line["amount"] for line in april if line["amount"] > 0)
    credited = -sum(line["amount"] for line in april if line["amount"] < 0)
    assert lines(second) == [("plan_credit", D("-32.67")), ("plan_charge", D("490.00"))]
    assert credited == D("45.34") and charged == D("51.67")
    assert credited <= charged


# ------------------------------------------------------------------ R14 monthly -> annual


def test_R14_monthly_to_annual_credits_unused_month_and_moves_the_renewal_date(book):
    """R14: Pro $19/month -> $190/year 10 days in: credit 12.67, charge 190.00, no setup fee."""
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="pro", interval="year")
    assert types(result) == ["ChargeRequested", "IntervalChanged", "InvoiceIssued", "PaymentSucceeded"]
    invoice = only_invoice(result)
    assert lines(invoice) == [("plan_credit", D("-12.67")), ("plan_charge", D("190.00"))]
    assert invoice.amount_due == D("177.33")
    s = state(b, "ws")
    assert (s["interval"], s["period_start"], s["period_end"]) == (
        "year", "2026-04-11T00:00:00Z", "2027-04-11T00:00:00Z")


@pytest.mark.parametrize(("plan", "price"), [("pro", "190.00"), ("team", "490.00")])
def test_R14_annual_costs_ten_months(book, plan, price):
    """R14 (003): Pro $190/year, Team $490/year, one year from checkout."""
    b = book("forms")
    b.do("ws", "add-payment-method", payment_method=VISA)
    result = b.do("ws", "subscribe", plan=plan, interval="year")
    assert lines(only_invoice(result)) == [("plan_charge", D(price))]
    assert b.sub("ws").period_end == utc("2027-04-01T00:00:00")
    b.at("2026-08-01T00:00:00")  # months pass inside the year: nothing is due, nothing recorded
    assert [type(e).__name__ for e in b.ledger.workspace_events("ws")][-1] == "PaymentSucceeded"


def test_R14_per_seat_monthly_to_annual(book):
    """R14 (000): Team 5 seats $40/month -> $400/year 10 days in: 26.67 credit, due 373.33."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    assert lines(invoice) == [("plan_credit", D("-26.67")), ("plan_charge", D("400.00"))]
    assert invoice.amount_due == D("373.33")
    assert b.sub("ws").period_end == utc("2027-04-11T00:00:00")


# ------------------------------------------------------------------ R15 trial/free -> paid


def test_R15_free_to_paid_starts_now_anchored_at_checkout(book):
    """R15: Free -> Pro on Apr 10 15:00 charges a full month from then; the cycle anchors there."""
    b = book("forms")
    b.do("ws", "subscribe", plan="free")
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.at("2026-04-10T15:00:00")
    result = b.do("ws", "change-plan", plan="pro")
    assert types(result) == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    assert lines(only_invoice(result)) == [("plan_charge", D("19.00"))]
    s = state(b, "ws")
    assert (s["period_start"], s["period_end"]) == ("2026-04-10T15:00:00Z", "2026-05-10T15:00:00Z")


def test_R15_trial_to_paid_ends_the_trial_and_anchors_the_cycle(book):
    """R15 (000): converting on day 4 of a 14-day trial ends the trial now; 4 seats x 8.00."""
    b = book("workspace")
    assert types(b.do("ws", "subscribe", plan="trial")) == ["WorkspaceRegistered", "TrialStarted"]
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.at("2026-04-05T00:00:00")
    result = b.do("ws", "change-plan", plan="team", seats=4)
    assert types(result) == ["ChargeRequested", "TrialConverted", "AICreditsGranted", "InvoiceIssued", "PaymentSucceeded"]
    assert lines(only_invoice(result)) == [("plan_charge", D("32.00"))]
    s = state(b, "ws")
    assert (s["status"], s["plan"], s["seats"]) == ("active", "team", 4)
    assert (s["period_start"], s["period_end"]) == ("2026-04-05T00:00:00Z", "2026-05-05T00:00:00Z")
    b.at("2026-04-20T00:00:00")  # the trial's old end passes without a trial expiry
    assert b.sub("ws").plan == "team"
    assert "TrialExpired" not in [type(e).__name__ for e in b.ledger.workspace_events("ws")]


# ------------------------------------------------------------------ R17 scheduled downgrades


def test_R17_downgrade_is_scheduled_for_period_end_and_keeps_the_higher_plan(book):
    b = forms_on(book, plan="team")
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="pro")
    assert types(result) == ["DowngradeScheduled"]
    assert result.invoices() == []
    s = state(b, "ws")
    assert s["plan"] == "team" and "webhooks" in s["features"] and s["seats"] == 10
    assert s["scheduled_change"] == {"kind": "downgrade", "plan": "pro", "tier": None, "interval": "month",
                                     "seats": None, "effective_at": "2026-05-01T00:00:00Z"}


def test_R17_notice_is_due_seven_days_before_the_downgrade_applies(book):
    b = forms_on(book, plan="team")
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="pro")
    b.at("2026-04-23T23:59:59")
    assert not [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "DowngradeNoticeDue"]
    b.at("2026-04-26T00:00:00")
    (notice,) = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "DowngradeNoticeDue"]
    assert (notice.timestamp, notice.effective_at, notice.plan) == (
        utc("2026-04-24T00:00:00"), utc("2026-05-01T00:00:00"), "pro")
    assert notice.channel == "scheduler"


def test_R17_downgrade_inside_the_notice_window_gives_notice_at_once(book):
    b = forms_on(book, plan="team")
    b.at("2026-04-28T00:00:00")
    assert types(b.do("ws", "change-plan", plan="pro")) == ["DowngradeScheduled", "DowngradeNoticeDue"]


def test_R17_keep_current_plan_cancels_the_scheduled_downgrade(book):
    b = forms_on(book, plan="team")
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="pro")
    result = b.do("ws", "cancel-change")
    assert types(result) == ["DowngradeCancelled"]
    assert b.sub("ws").scheduled is None
    refused(b, "ws", "no_scheduled_change", "cancel-change")
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").plan == "team"
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert lines(renewal) == [("plan_charge", D("49.00"))]
    assert not [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "DowngradeNoticeDue"]


def test_R17_no_scheduled_change_to_cancel(book):
    b = forms_on(book, plan="team")
    result = refused(b, "ws", "no_scheduled_change", "cancel-change")
    assert "no scheduled change" in result.error.message


def test_R17_scheduled_downgrade_applies_at_the_boundary_and_renews_at_the_lower_price(book):
    b = forms_on(book, plan="team")
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="pro")
    b.at("2026-04-30T23:59:59")
    assert b.sub("ws").plan == "team"
    b.at("2026-05-01T00:00:00")
    events = b.ledger.workspace_events("ws")
    names = [type(e).__name__ for e in events]
    applied = names.index("DowngradeApplied")
    assert names[applied:] == ["DowngradeApplied", "PeriodRenewed", "InvoiceIssued", "ChargeRequested", "PaymentSucceeded"]
    assert events[applied].timestamp == utc("2026-05-01T00:00:00")
    assert lines(events[-3]) == [("plan_charge", D("19.00"))]
    s = state(b, "ws")
    assert (s["plan"], s["period_start"], s["period_end"], s["scheduled_change"]) == (
        "pro", "2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z", None)


def test_R17_scheduled_downgrade_to_another_interval_starts_its_cycle_at_the_boundary(book):
    """R17/R14: Team monthly -> Pro annual applies on May 1 and bills a year from May 1."""
    b = forms_on(book, plan="team")
    assert types(b.do("ws", "change-plan", plan="pro", interval="year")) == ["DowngradeScheduled"]
    b.at("2026-05-01T00:00:00")
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert lines(renewal) == [("plan_charge", D("190.00"))]
    assert (renewal.lines[0]["period_start"], renewal.lines[0]["period_end"]) == (
        utc("2026-05-01T00:00:00"), utc("2027-05-01T00:00:00"))
    s = state(b, "ws")
    assert (s["plan"], s["interval"], s["period_start"], s["period_end"]) == (
        "pro", "year", "2026-05-01T00:00:00Z", "2027-05-01T00:00:00Z")


def test_R17_scheduled_downgrade_to_free_stops_billing(book):
    b = forms_on(book, plan="pro")
    b.do("ws", "change-plan", plan="free")
    b.at("2026-06-15T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.period_end, sub.open_invoice) == ("free", None, None)
    invoices = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"]
    assert len(invoices) == 1  # only the first Pro month


def test_R17_an_upgrade_replaces_a_scheduled_downgrade(book):
    b = forms_on(book, plan="team")
    b.do("ws", "change-plan", plan="free")
    result = b.do("ws", "change-plan", plan="team", interval="year")
    assert types(result)[:3] == ["ChargeRequested", "DowngradeCancelled", "IntervalChanged"]
    assert b.sub("ws").scheduled is None


# ------------------------------------------------------------------ R19 the boundary


def test_R19_at_the_boundary_storage_over_the_new_limit_becomes_read_only_and_features_stop(book):
    b = forms_on(book, plan="team")
    b.do("ws", "report-storage", gb=D("4"))
    b.do("ws", "change-plan", plan="pro")
    b.at("2026-04-20T00:00:00")
    assert b.do("ws", "report-storage", gb=D("42")).ok  # still on Team until the boundary (R17)
    before = state(b, "ws")
    assert (before["storage_read_only"], "webhooks" in before["features"]) == (False, True)
    b.at("2026-05-01T00:00:00")
    after = state(b, "ws")
    assert (after["plan"], after["storage_limit_gb"], after["storage_read_only"]) == ("pro", 10, True)
    assert "webhooks" not in after["features"] and "ai_insights" not in after["features"]
    assert after["storage_used_gb"] == "42"
    b.do("ws", "report-storage", gb=D("9"))
    assert state(b, "ws")["storage_read_only"] is False


# ------------------------------------------------------------------ R24 over-seat warning


def test_R24_over_seat_warning_stays_whatever_plan_is_chosen(book):
    """R24 (000): 7 members on 5 seats warns; moving to Business at 5 seats keeps the warning."""
    b = workspace_on(book, seats=5)
    b.do("ws", "set-members", members=7)
    assert state(b, "ws")["over_seat"] is True
    assert b.do("ws", "change-plan", plan="business", seats=5).ok
    assert state(b, "ws")["over_seat"] is True
    assert b.do("ws", "change-plan", plan="business", interval="year", seats=5).ok
    assert state(b, "ws")["over_seat"] is True
    assert b.do("ws", "set-seats", seats=7).ok
    assert state(b, "ws")["over_seat"] is False


def test_R24_removing_members_clears_the_over_seat_warning(book):
    b = workspace_on(book, seats=5)
    b.do("ws", "set-members", members=6)
    assert state(b, "ws")["over_seat"] is True
    b.do("ws", "set-members", members=5)
    assert state(b, "ws")["over_seat"] is False


def test_R24_flat_plan_over_seat_until_a_plan_with_more_seats(book):
    """R24 (003): Pro has 3 seats; 5 members warn until Team's 10 seats."""
    b = forms_on(book)
    b.do("ws", "set-members", members=5)
    assert state(b, "ws")["over_seat"] is True
    b.do("ws", "change-plan", plan="team")
    assert state(b, "ws")["over_seat"] is False


# ------------------------------------------------------------------ R25 previews


def invoice_shape(invoice):
    return (invoice.lines, invoice.subtotal, invoice.credit_applied, invoice.amount_due, invoice.currency)


@pytest.mark.parametrize(
    ("catalog", "plan", "seats", "command", "args"),
    [
        ("forms", "pro", None, "change-plan", {"plan": "team"}),
        ("forms", "pro", None, "change-plan", {"plan": "team", "interval": "year"}),
        ("workspace", "team", 5, "change-plan", {"plan": "business", "seats": 6}),
        ("workspace", "business", 5, "change-plan", {"plan": "team"}),
        ("workspace", "team", 5, "set-seats", {"seats": 9}),
        ("workspace", "team", 5, "set-storage-addon", {"addon": "storage-1tb"}),
        ("workspace", "team", 5, "change-plan", {"plan": "team", "interval": "year"}),
    ],
)
def test_R25_applying_a_change_yields_exactly_the_previewed_lines(book, catalog, plan, seats, command, args):
    """R25: the preview records nothing, charges nothing, and is exactly what the change then bills."""
    b = forms_on(book, plan=plan) if catalog == "forms" else workspace_on(book, plan=plan, seats=seats)
    b.at("2026-04-11T07:00:00")
    before, charges = version(b, "ws"), len(b.payments.charges())
    preview = b.preview("ws", command, **args)
    assert preview.ok
    assert version(b, "ws") == before and len(b.payments.charges()) == charges
    result = b.do("ws", command, **args)
    assert result.ok
    assert invoice_shape(only_invoice(preview)) == invoice_shape(only_invoice(result))
    assert [t for t in types(result) if t != "ChargeRequested"] == types(preview)
    for field in ("plan", "interval", "seats", "storage_addon", "period_start", "period_end", "billing_credit"):
        assert getattr(preview.subscription, field) == getattr(b.sub("ws"), field), field


def test_R25_preview_shows_plan_seats_interval_lines_due_and_next_renewal(book):
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "set-storage-addon", addon="storage-100gb")
    preview = b.preview("ws", "change-plan", plan="business", seats=6)
    invoice = only_invoice(preview)
    assert lines(invoice) == [("plan_credit", D("-26.67")), ("plan_charge", D("60.00"))]
    assert invoice.amount_due == D("33.33")
    after = preview.subscription
    assert (after.plan, after.seats, after.interval, after.storage_addon) == ("business", 6, "month", "storage-100gb")
    assert after.period_end == utc("2026-05-01T00:00:00")
    assert b.sub("ws").plan == "team"


def test_R25_preview_of_a_refused_change_gives_the_same_refusal(book):
    b = forms_on(book, plan="team")
    b.do("ws", "set-members", members=5)
    assert b.preview("ws", "change-plan", plan="pro").error.code == "seat_limit_exceeded"
    assert b.preview("ws", "change-plan", plan="team").error.code == "already_on_plan"


def test_R25_preview_includes_what_falls_due_first(book):
    """R25: previewing after a period end prices the change against the renewed period."""
    b = forms_on(book)
    b.clock.move_to(utc("2026-05-11T00:00:00"))  # time passes, nothing advanced yet
    preview = b.preview("ws", "change-plan", plan="team")
    assert "PeriodRenewed" in [type(e).__name__ for e in preview.due_events]
    result = b.do("ws", "change-plan", plan="team")
    assert invoice_shape(only_invoice(preview)) == invoice_shape(only_invoice(result))
    assert lines(only_invoice(result)) == [("plan_credit", D("-12.87")), ("plan_charge", D("33.19"))]
