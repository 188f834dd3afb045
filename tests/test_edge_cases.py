"""Edge cases an auditor would try: consecutive changes inside one period, schedules superseded,
past-due renewals, month-end and leap-year anchors, operations corner cases, and the money
invariants every invoice and every workspace must keep."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.conftest import utc
from tests.support import (
    D, DECLINED, VISA, catalog_variant, forms_on, lines, only_invoice, refused, types, workspace_on,
)


def all_invoices(b, ws="ws"):
    return [e for e in b.ledger.workspace_events(ws) if type(e).__name__ == "InvoiceIssued"]


def audit(b, ws="ws"):
    """Every invoice: subtotal == sum(lines), 0 <= credit_applied <= subtotal, amount_due ==
    subtotal - credit_applied >= 0, amounts in cents. The workspace: everything due minus the
    billing credit still held equals the net of every line ever billed (no money appears or vanishes)."""
    sub = b.sub(ws)
    invoices = all_invoices(b, ws)
    for inv in invoices:
        total = sum((line["amount"] for line in inv.lines), Decimal(0))
        for line in inv.lines:
            assert isinstance(line["amount"], Decimal)
            assert line["amount"] == line["amount"].quantize(Decimal("0.01"))
        assert inv.subtotal == total, inv.invoice_id
        assert inv.credit_applied >= 0 and inv.amount_due >= 0, inv.invoice_id
        if inv.subtotal >= 0:
            assert inv.credit_applied <= inv.subtotal
            assert inv.amount_due == inv.subtotal - inv.credit_applied, inv.invoice_id
        else:
            assert inv.credit_applied == 0 and inv.amount_due == 0
    due = sum((inv.amount_due for inv in invoices), Decimal(0))
    net = sum((inv.subtotal for inv in invoices), Decimal(0))
    assert sub.billing_credit >= 0
    assert due - sub.billing_credit == net
    return invoices


def plan_lines_for(invoices, period_end):
    """Every plan/seat line that bills the period ending at `period_end`."""
    end = utc(period_end)
    return [line for inv in invoices for line in inv.lines
            if line["kind"].startswith(("plan_", "seat_")) and line["period_end"] == end]


# ------------------------------------------------------------------ consecutive changes in one period


def test_R13_R21_consecutive_changes_in_one_period_never_credit_more_than_was_charged(book):
    """Team 5 -> add seats -> Business -> fewer seats -> Team -> Business again, all in April:
    April's credits never exceed April's charges, and every invoice adds up."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-05T00:00:00")
    assert b.do("ws", "set-seats", seats=8).ok
    b.at("2026-04-09T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "change-plan", plan="business").ok
    b.at("2026-04-12T00:00:00")
    assert b.do("ws", "set-seats", seats=4).ok
    b.at("2026-04-15T00:00:00")
    assert b.do("ws", "change-plan", plan="team").ok
    b.at("2026-04-20T00:00:00")
    assert b.do("ws", "change-plan", plan="business").ok
    b.at("2026-04-25T00:00:00")
    assert b.do("ws", "change-plan", plan="team").ok
    invoices = audit(b)
    april = plan_lines_for(invoices, "2026-05-01T00:00:00")
    charged = sum(line["amount"] for line in april if line["amount"] > 0)
    credited = -sum(line["amount"] for line in april if line["amount"] < 0)
    assert credited <= charged


def test_R21_reduced_seats_are_not_credited_at_a_price_never_paid(book):
    """Team 5 seats, reduce to 3 (no credit, 5 stay paid for April), upgrade to Business for
    3 seats 10 days in, back to Team 10 days later. The upgrade credits the 3 seats it takes
    along (8.00 x 3 x 20/30 = 16.00), not the 2 removed ones (issue 7); Business was only ever
    bought for 3 seats, so its unused time is 15.00 x 3 x 10/30 = 15.00, not 25.00."""
    b = workspace_on(book, seats=5)
    assert b.do("ws", "set-seats", seats=3).ok
    b.at("2026-04-11T00:00:00")
    up = only_invoice(b.do("ws", "change-plan", plan="business"))
    assert lines(up) == [("plan_credit", D("-16.00")), ("plan_charge", D("30.00"))]
    b.at("2026-04-21T00:00:00")
    down = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert lines(down) == [("plan_credit", D("-15.00")), ("plan_charge", D("8.00"))]
    assert b.sub("ws").billing_credit == D("7.00")
    audit(b)


def test_R21_seats_added_after_an_upgrade_are_charged_at_the_new_plan_price(book):
    """Team 5 seats reduced to 3, then Business for 3 seats: the 4th Business seat was never
    paid for, so adding it 20 days in costs 15.00 x 1 x 10/30 = 5.00 (before the fix: nothing,
    because the 5 Team seats still counted as paid)."""
    b = workspace_on(book, seats=5)
    assert b.do("ws", "set-seats", seats=3).ok
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="business").ok
    b.at("2026-04-21T00:00:00")
    inv = only_invoice(b.do("ws", "set-seats", seats=4))
    assert lines(inv) == [("seat_charge", D("5.00"))]
    audit(b)


def test_R21_seat_reduction_then_re_adding_within_one_period_charges_only_new_seats(book):
    """Team 5 -> 2 -> 5 -> 6 in April: back to 5 costs nothing (paid already), the 6th is prorated."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-06T00:00:00")
    assert b.do("ws", "set-seats", seats=2).ok
    again = b.do("ws", "set-seats", seats=5)
    assert again.ok and again.invoices() == []
    b.at("2026-04-16T00:00:00")
    sixth = only_invoice(b.do("ws", "set-seats", seats=6))
    assert lines(sixth) == [("seat_charge", D("4.00"))]  # 8.00 x 1 x 15/30
    b.at("2026-05-01T00:00:00")
    (renewal,) = [i for i in all_invoices(b) if i.purpose == "renewal"]
    assert lines(renewal) == [("plan_charge", D("48.00"))]
    audit(b)


def test_R21_seats_reduced_then_period_renews_then_re_added_is_charged(book):
    """Seats paid in April do not carry into May: 5 -> 2 in April, renew at 2, back to 5 in May is charged."""
    b = workspace_on(book, seats=5)
    assert b.do("ws", "set-seats", seats=2).ok
    b.at("2026-05-01T00:00:00")
    b.at("2026-05-16T00:00:00")
    inv = only_invoice(b.do("ws", "set-seats", seats=5))
    assert lines(inv) == [("seat_charge", D("12.39"))]  # 8.00 x 3 x 16/31 = 12.387
    audit(b)


# ------------------------------------------------------------------ schedules superseded


def test_R17_upgrade_before_the_boundary_supersedes_the_scheduled_downgrade(book):
    """Pro with a downgrade to Free scheduled; an upgrade to Team before the boundary cancels the
    schedule: at the boundary exactly one plan (Team) renews, and nothing is applied twice."""
    b = forms_on(book)
    assert b.do("ws", "change-plan", plan="free").ok
    b.at("2026-04-11T00:00:00")
    up = b.do("ws", "change-plan", plan="team")
    assert up.ok and "DowngradeCancelled" in types(up)
    assert b.sub("ws").scheduled is None
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.status) == ("team", "active")
    names = [type(e).__name__ for e in b.ledger.workspace_events("ws")]
    assert "DowngradeApplied" not in names and "DowngradeNoticeDue" not in names
    (renewal,) = [i for i in all_invoices(b) if i.purpose == "renewal"]
    assert lines(renewal) == [("plan_charge", D("49.00"))]
    audit(b)


def test_R17_second_downgrade_replaces_the_first_schedule(book):
    """Team -> Pro scheduled, then Team -> Free: only Free applies at the boundary."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "change-plan", plan="pro").ok
    second = b.do("ws", "change-plan", plan="free")
    assert second.ok and types(second)[0] == "DowngradeCancelled"
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert sub.plan == "free" and sub.period_end is None
    assert [i.purpose for i in all_invoices(b)] == ["subscription"]
    audit(b)


def test_R17_interval_upgrade_supersedes_a_scheduled_downgrade(book):
    """Team monthly with Pro scheduled; switching to Team annual cancels the schedule and no
    downgrade happens at the old or the new boundary."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "change-plan", plan="pro").ok
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="team", interval="year").ok
    b.at("2027-04-11T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.interval) == ("team", "year")
    assert sub.period_start == utc("2027-04-11T00:00:00")
    audit(b)


def test_R17_cancellation_scheduled_then_downgrade_replaces_the_cancellation(book):
    """Cancel scheduled, then a downgrade to Pro: the workspace is on Pro at the boundary, not canceled."""
    b = forms_on(book, plan="team")
    assert b.do("ws", "cancel").ok
    assert b.sub("ws").status == "cancel_scheduled"
    down = b.do("ws", "change-plan", plan="pro")
    assert down.ok and types(down)[0] == "CancellationCancelled"
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.status) == ("pro", "active")
    (renewal,) = [i for i in all_invoices(b) if i.purpose == "renewal"]
    assert lines(renewal) == [("plan_charge", D("19.00"))]


def test_R11_cancellation_scheduled_then_upgrade_keeps_the_subscription(book):
    b = forms_on(book)
    assert b.do("ws", "cancel").ok
    b.at("2026-04-11T00:00:00")
    up = b.do("ws", "change-plan", plan="team")
    assert up.ok and "CancellationCancelled" in types(up)
    assert b.sub("ws").status == "active"
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").plan, b.sub("ws").status) == ("team", "active")
    audit(b)


def test_cancel_while_a_downgrade_is_scheduled_cancels_at_the_boundary(book):
    b = forms_on(book, plan="team")
    assert b.do("ws", "change-plan", plan="pro").ok
    assert b.do("ws", "cancel").ok
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").status == "canceled"
    assert [i.purpose for i in all_invoices(b)] == ["subscription"]


# ------------------------------------------------------------------ past due


def test_R8_declined_renewal_then_pay_invoice_restores_active(book):
    b = forms_on(book, plan="team")
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").status == "past_due"
    refused(b, "ws", "open_invoice", "change-plan", plan="team", interval="year")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    paid = b.do("ws", "pay-invoice")
    assert paid.ok and paid.events[0].amount == D("49.00")
    sub = b.sub("ws")
    assert (sub.status, sub.open_invoice) == ("active", None)
    again = b.do("ws", "pay-invoice")
    assert again.error.code == "no_open_invoice"
    audit(b)


def test_R8_no_credit_pack_is_bought_on_top_of_an_open_invoice(book):
    """An AI credit pack was bought while the renewal stayed unpaid, though seats, add-ons and
    operation packs were refused: a purchase waits for the open invoice as a change does."""
    b = workspace_on(book, plan="team", seats=2)
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").status == "past_due"
    result = refused(b, "ws", "open_invoice", "buy-ai-credits", pack="ai-1000")
    assert "before buying AI credits" in result.error.message
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok and b.do("ws", "pay-invoice").ok
    assert b.do("ws", "buy-ai-credits", pack="ai-1000").ok


def test_R8_past_due_workspace_never_renews_over_its_open_invoice(book):
    """A declined renewal is retried (May 4, 6, 8), then the workspace is suspended: June does not
    renew on top of May's open invoice (before: a second open invoice). Paying it reactivates the
    workspace and, its period having run out, a new one starts at the payment."""
    b = forms_on(book, plan="pro")
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-06-01T00:00:00")
    sub = b.sub("ws")
    assert sub.status == "suspended" and len(sub.open_invoices()) == 1
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    assert b.sub("ws").status == "active"
    b.at("2026-06-01T00:00:00")
    assert b.sub("ws").period_end == utc("2026-07-01T00:00:00")
    assert b.do("ws", "change-plan", plan="team").ok
    audit(b)


def test_R8_cancellation_scheduled_then_a_declined_payment_still_blocks_changes(book):
    """A declined charge while a cancellation is scheduled leaves an open invoice; the status must
    not read as if all were paid once the cancellation is withdrawn."""
    b = workspace_on(book, seats=2)
    assert b.do("ws", "cancel").ok
    assert b.do("ws", "cancel-change").ok
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").status == "past_due"


# ------------------------------------------------------------------ trials


def test_R15_trial_expiry_with_a_card_on_file_falls_back_to_free_and_charges_nothing(book):
    b = book("workspace", "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="trial").ok
    b.at("2026-04-20T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.status) == ("free", "active")
    assert not b.payments.charges() and all_invoices(b) == []


def test_R15_trial_converted_on_its_last_day_anchors_at_checkout(book):
    b = book("workspace", "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="trial").ok
    b.at("2026-04-14T23:00:00")
    inv = only_invoice(b.do("ws", "change-plan", plan="team", seats=3))
    assert lines(inv) == [("plan_charge", D("24.00"))]
    b.at("2026-04-16T00:00:00")
    sub = b.sub("ws")
    assert (sub.plan, sub.period_start, sub.period_end) == (
        "team", utc("2026-04-14T23:00:00"), utc("2026-05-14T23:00:00"))


# ------------------------------------------------------------------ anchors


def test_month_end_anchor_Jan_31_renews_on_each_month_end(book):
    b = forms_on(book, start="2027-01-31T00:00:00")
    b.at("2027-06-01T00:00:00")
    renewals = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "PeriodRenewed"]
    assert [e.period_start.date().isoformat() for e in renewals] == [
        "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    assert all(i.amount_due == D("19.00") for i in all_invoices(b))
    audit(b)


def test_leap_day_annual_anchor_renews_feb_28_then_feb_29_in_the_next_leap_year(book):
    b = forms_on(book, interval="year", start="2028-02-29T00:00:00")
    b.at("2032-03-01T00:00:00")
    renewals = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "PeriodRenewed"]
    assert [e.period_start.date().isoformat() for e in renewals] == [
        "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]
    assert [i.amount_due for i in all_invoices(b)] == [D("190.00")] * 5
    audit(b)


def test_R13_upgrade_in_february_of_a_leap_year_uses_29_days(book):
    b = forms_on(book, start="2028-02-01T00:00:00")
    b.at("2028-02-20T00:00:00")
    inv = only_invoice(b.do("ws", "change-plan", plan="team"))
    # 10 of 29 days left: 19 x 10/29 = 6.5517 -> 6.55; 49 x 10/29 = 16.8966 -> 16.90
    assert lines(inv) == [("plan_credit", D("-6.55")), ("plan_charge", D("16.90"))]


def test_R14_monthly_annual_monthly_on_forms_and_back(book):
    """Pro monthly -> Pro annual (credit the month) -> Pro monthly is a downgrade scheduled at the
    end of the year; the year is never billed twice."""
    b = forms_on(book)
    b.at("2026-04-16T00:00:00")
    assert b.do("ws", "change-plan", plan="pro", interval="year").ok
    down = b.do("ws", "change-plan", plan="pro", interval="month")
    assert down.ok and types(down)[0] == "DowngradeScheduled"
    assert down.events[0].effective_at == utc("2027-04-16T00:00:00")
    b.at("2027-05-20T00:00:00")
    sub = b.sub("ws")
    assert (sub.interval, sub.period_start) == ("month", utc("2027-05-16T00:00:00"))
    assert [i.purpose for i in all_invoices(b)] == ["subscription", "upgrade", "renewal", "renewal"]
    assert [i.amount_due for i in all_invoices(b)][-2:] == [D("19.00"), D("19.00")]
    audit(b)


def test_R14_R10_workspace_monthly_annual_monthly_in_one_day_gives_billing_credit_not_cash(book):
    b = workspace_on(book, seats=2)
    b.at("2026-04-11T00:00:00")
    year = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    assert lines(year) == [("plan_credit", D("-10.67")), ("plan_charge", D("160.00"))]
    month = only_invoice(b.do("ws", "change-plan", plan="team", interval="month"))
    assert lines(month) == [("plan_credit", D("-160.00")), ("plan_charge", D("16.00"))]
    assert month.amount_due == 0
    assert b.sub("ws").billing_credit == D("144.00")
    assert len(b.payments.charges()) == 2
    audit(b)


def test_R22_storage_add_on_across_an_interval_change_is_credited_and_recharged_annually(book):
    b = workspace_on(book, seats=2)
    b.at("2026-04-11T00:00:00")
    add = only_invoice(b.do("ws", "set-storage-addon", addon="storage-100gb"))
    assert lines(add) == [("addon_charge", D("6.67"))]
    year = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    assert lines(year) == [("plan_credit", D("-10.67")), ("addon_credit", D("-6.67")),
                           ("plan_charge", D("160.00")), ("addon_charge", D("100.00"))]
    b.at("2027-04-11T00:00:00")
    renewal = all_invoices(b)[-1]
    assert lines(renewal) == [("plan_charge", D("160.00")), ("addon_charge", D("100.00"))]
    audit(b)


def test_R22_add_on_changed_back_and_forth_never_credits_more_than_was_charged(book):
    b = workspace_on(book, seats=2)
    b.at("2026-04-06T00:00:00")
    assert b.do("ws", "set-storage-addon", addon="storage-1tb").ok
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "set-storage-addon", addon="storage-100gb").ok
    b.at("2026-04-16T00:00:00")
    assert b.do("ws", "set-storage-addon", addon="storage-1tb").ok
    b.at("2026-04-21T00:00:00")
    assert b.do("ws", "set-storage-addon", addon=None).ok
    invoices = audit(b)
    april = [line for inv in invoices for line in inv.lines if line["kind"].startswith("addon_")]
    assert -sum(l["amount"] for l in april if l["amount"] < 0) <= sum(l["amount"] for l in april if l["amount"] > 0)


# ------------------------------------------------------------------ billing credit over renewals


def test_R27_billing_credit_larger_than_a_renewal_is_spread_over_several(book):
    """144.00 of credit on Team 2 seats (16.00/month): nine renewals are covered in full, the
    tenth partly (144 = 9 x 16), and nothing is charged until the credit is spent."""
    b = workspace_on(book, seats=2)
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="team", interval="year").ok
    assert b.do("ws", "change-plan", plan="team", interval="month").ok
    charges = len(b.payments.charges())
    b.at("2027-01-11T00:00:00")
    renewals = [i for i in all_invoices(b) if i.purpose == "renewal"]
    assert len(renewals) == 9
    assert all((i.credit_applied, i.amount_due) == (D("16.00"), 0) for i in renewals)
    assert b.sub("ws").billing_credit == 0
    assert len(b.payments.charges()) == charges
    b.at("2027-02-11T00:00:00")
    last = all_invoices(b)[-1]
    assert (last.credit_applied, last.amount_due) == (0, D("16.00"))
    audit(b)


# ------------------------------------------------------------------ idempotency, refusals


def test_idempotent_repeat_after_a_renewal_charges_nothing_more(book):
    b = forms_on(book)
    first = b.do("ws", "change-plan", key="up-1", plan="team")
    assert first.ok
    b.at("2026-05-01T00:00:00")
    charges = len(b.payments.charges())
    v = b.sub("ws").version
    again = b.do("ws", "change-plan", key="up-1", plan="team")
    assert again.ok and again.replayed
    assert [e.originator_version for e in again.events] == [e.originator_version for e in first.events]
    assert b.sub("ws").version == v and len(b.payments.charges()) == charges


@pytest.mark.parametrize(("command", "args"), [
    ("change-plan", {"plan": "pro"}),
    ("change-plan", {"plan": "nope"}),
    ("change-plan", {"plan": "scale"}),
    ("set-seats", {"seats": 4}),
    ("set-storage-addon", {"addon": "storage-100gb"}),
    ("cancel-change", {}),
    ("consume-ai-credits", {"credits": 1}),
    ("record-usage", {"operations": 5}),
])
def test_refused_commands_never_change_the_aggregate_version(book, command, args):
    b = forms_on(book)
    code = {"pro": "already_on_plan", "nope": "unknown_plan", "scale": "contact_sales",
            }.get(args.get("plan"), "no_scheduled_change" if command == "cancel-change" else None)
    v = b.sub("ws").version
    result = b.do("ws", command, **args)
    assert not result.ok and result.events == []
    if code:
        assert result.error.code == code
    assert b.sub("ws").version == v


# ------------------------------------------------------------------ AI grants


def test_R23_grants_follow_seats_and_plan_at_each_renewal(book):
    b = workspace_on(book, seats=2)
    assert b.sub("ws").ai_granted == 200
    assert b.do("ws", "consume-ai-credits", credits=150).ok
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "set-seats", seats=4).ok
    assert b.sub("ws").ai_granted == 50  # this cycle's grant is unchanged
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").ai_granted == 400
    assert b.do("ws", "change-plan", plan="business").ok
    b.at("2026-06-01T00:00:00")
    assert b.sub("ws").ai_granted == 1200


# ------------------------------------------------------------------ operations


def ops_on(book, plan="core", tier=150000, interval="month", start="2026-04-01T00:00:00", ws="ws",
           catalog="operations"):
    b = book(catalog, start)
    assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    assert b.do(ws, "subscribe", plan=plan, tier=tier, interval=interval).ok
    return b


def test_usage_beyond_the_balance_is_recorded_as_overage_and_leaves_nothing_negative(book, tmp_path):
    """With `overage = "allow"` (the built-in catalog blocks, R19)."""
    b = ops_on(book, tier=10000, catalog=catalog_variant(tmp_path, "operations", "ops-allow", overage='"allow"'))
    used = b.do("ws", "record-usage", operations=12000)
    assert used.ok and used.events[0].overage == 2000
    sub = b.sub("ws")
    assert (sub.ops_allotment, sub.ops_extra, sub.ops_carried) == (0, 0, 0)
    assert sub.operations_remaining == 0


def test_R18_bought_operations_carry_into_a_downgrade(book):
    """Core 40,000 with 20,000 extra bought and 30,000 used -> Core 10,000: the 30,000 unused
    (10,000 of the tier + 20,000 extra) carry over: 40,000 in the first month."""
    b = ops_on(book, tier=40000)
    assert b.do("ws", "buy-operations", operations=20000).ok
    assert b.do("ws", "record-usage", operations=30000).ok
    assert b.do("ws", "change-plan", plan="core", tier=10000).ok
    sub = b.sub("ws")
    assert (sub.ops_carried, sub.ops_allotment, sub.ops_extra) == (30000, 10000, 0)
    assert sub.operations_remaining == 40000


def test_R16_annual_upgrade_credit_counts_extra_operations_and_is_capped(book):
    b = ops_on(book, plan="core", tier=10000)
    assert b.do("ws", "buy-operations", operations=10000).ok
    inv = only_invoice(b.do("ws", "change-plan", plan="core", tier=120000, interval="year"))
    # 20,000 unused x 10.59/10,000 = 21.18 against 105.90
    assert lines(inv) == [("operations_credit", D("-21.18")), ("plan_charge", D("105.90"))]
    assert b.sub("ws").operations_remaining == 10000


def test_R18_annual_to_monthly_at_a_lower_tier_is_a_downgrade_carrying_operations(book):
    b = ops_on(book, plan="pro", tier=240000, interval="year")
    assert b.do("ws", "record-usage", operations=5000).ok
    down = b.do("ws", "change-plan", plan="pro", tier=10000, interval="month")
    assert down.ok and "DowngradeApplied" in types(down)
    sub = b.sub("ws")
    assert sub.operations_remaining == 15000 + 11 * 20000 + 10000  # the prepaid months carry too


def test_R18_annual_reset_expires_extra_operations_and_keeps_carried(book):
    b = ops_on(book, plan="pro", tier=40000)
    assert b.do("ws", "change-plan", plan="core", tier=120000, interval="year").ok
    assert b.sub("ws").ops_carried == 40000
    assert b.do("ws", "buy-operations", operations=10000).ok
    b.at("2026-05-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.ops_allotment, sub.ops_extra) == (10000, 0)
    assert sub.ops_carried == 40000  # carried for 365 days on an annual plan
    b.at("2026-06-01T00:00:00")
    assert b.sub("ws").ops_allotment == 10000


def test_canceled_operations_workspace_cannot_buy_operations(book):
    b = ops_on(book, tier=10000)
    assert b.do("ws", "cancel").ok
    b.at("2026-05-02T00:00:00")
    assert b.sub("ws").status == "canceled"
    charges = len(b.payments.charges())
    refused(b, "ws", "not_subscribed", "buy-operations", operations=10000)
    assert b.sub("ws").operations_remaining == 0
    assert len(b.payments.charges()) == charges


# ------------------------------------------------------------------ journal invariant across a long story


def test_no_money_appears_or_vanishes_over_a_long_workspace_story(book):
    b = workspace_on(book, seats=3)
    steps = [
        ("2026-04-03T00:00:00", "set-storage-addon", {"addon": "storage-100gb"}),
        ("2026-04-07T00:00:00", "change-plan", {"plan": "business"}),
        ("2026-04-09T00:00:00", "set-seats", {"seats": 6}),
        ("2026-04-20T00:00:00", "change-plan", {"plan": "team"}),
        ("2026-05-03T00:00:00", "change-plan", {"plan": "team", "interval": "year"}),
        ("2026-05-04T00:00:00", "set-seats", {"seats": 4}),
        ("2026-05-05T00:00:00", "change-plan", {"plan": "business", "interval": "month"}),
        ("2026-05-06T00:00:00", "change-plan", {"plan": "team", "interval": "month"}),
        ("2026-06-20T00:00:00", "set-storage-addon", {"addon": None}),
        ("2026-06-21T00:00:00", "change-plan", {"plan": "free", "seats": None}),
    ]
    for at, command, args in steps:
        b.at(at)
        args = {k: v for k, v in args.items() if not (k == "seats" and v is None)}
        result = b.do("ws", command, **args)
        assert result.ok, (at, command, result.error)
        audit(b)
    b.at("2026-09-01T00:00:00")
    audit(b)


# ------------------------------------------------------------------ found by this audit


def test_R8_R20_cancel_and_resubscribe_is_no_way_around_an_open_invoice(book):
    """A declined renewal leaves May open; cancel, let it lapse, add a good card and subscribe
    again: refused until the open invoice is paid (before the fix the new subscription was
    charged while May's 16.00 stayed unpaid)."""
    b = workspace_on(book, seats=2)
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-05-01T00:00:00")
    assert b.do("ws", "cancel").ok
    b.at("2026-06-01T00:00:00")
    assert b.sub("ws").status == "canceled"
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    refused(b, "ws", "open_invoice", "subscribe", plan="team", seats=2)
    refused(b, "ws", "open_invoice", "subscribe", plan="free")
    assert b.do("ws", "pay-invoice").ok
    assert b.do("ws", "subscribe", plan="team", seats=2).ok
    audit(b)


def test_R16_annual_tier_upgrade_credits_the_monthly_allotments_not_yet_reset(book):
    """Core 120,000 ops/year at 105.90 (0.0008825/op), bought Apr 1. On Jul 15, after three
    monthly resets and 4,000 ops used this month, the tier still owes 6,000 + 8 x 10,000 =
    86,000 unused operations: credit 75.90 (before the fix only this month's 6,000: 5.30)."""
    b = ops_on(book, plan="core", tier=120000, interval="year")
    b.at("2026-07-15T00:00:00")
    assert b.do("ws", "record-usage", operations=4000).ok
    preview = only_invoice(b.preview("ws", "change-plan", plan="pro", tier=120000, interval="year"))
    result = b.do("ws", "change-plan", plan="pro", tier=120000, interval="year")
    inv = only_invoice(result)
    assert lines(inv) == [("operations_credit", D("-75.90")), ("plan_charge", D("188.20"))]
    assert lines(preview) == lines(inv)
    (converted,) = [e for e in result.events if type(e).__name__ == "OperationsConvertedToCredit"]
    assert converted.operations == 86000
    assert b.sub("ws").operations_remaining == 10000


def test_R16_R27_annual_tier_upgrade_the_day_after_buying_is_capped_at_the_new_bill(book):
    """Core annual bought yesterday -> Core 150,000/month (113.85): 120,000 unused ops are worth
    105.90, under the 113.85 bill; Pro annual 240,000 -> Core monthly 10,000 is a downgrade."""
    b = ops_on(book, plan="core", tier=120000, interval="year")
    b.at("2026-04-02T00:00:00")
    inv = only_invoice(b.do("ws", "change-plan", plan="core", tier=150000, interval="month"))
    assert lines(inv) == [("operations_credit", D("-105.90")), ("plan_charge", D("113.85"))]
    assert inv.amount_due == D("7.95")


def test_R18_annual_to_monthly_downgrade_carries_the_allotments_not_yet_reset(book):
    """The prepaid months of an annual tier are unused operations too: they carry (R18), as they
    are credited on an upgrade (R16)."""
    b = ops_on(book, plan="pro", tier=240000, interval="year")
    b.at("2026-04-02T00:00:00")
    assert b.do("ws", "change-plan", plan="pro", tier=10000, interval="month").ok
    assert b.sub("ws").ops_carried == 240000


def test_R16_R18_downgrade_then_upgrade_never_costs_less_than_upgrading_directly(book):
    """Carried operations keep the rate they were paid at: a cheap-tier detour cannot revalue
    150,000 operations bought at 0.000759/op at the cheaper tier's 0.001059/op."""
    direct = ops_on(book, plan="core", tier=150000)
    paid_direct = only_invoice(direct.do("ws", "change-plan", plan="pro", tier=150000)).amount_due
    detour = ops_on(book, plan="core", tier=150000, ws="ws2")
    down = only_invoice(detour.do("ws2", "change-plan", plan="core", tier=10000)).amount_due
    up = only_invoice(detour.do("ws2", "change-plan", plan="pro", tier=150000)).amount_due
    assert paid_direct == D("76.15")
    assert down + up >= paid_direct


def test_advancing_twice_to_the_same_instant_renews_once(book):
    b = forms_on(book)
    b.at("2026-05-01T00:00:00")
    count = len(b.ledger.workspace_events("ws"))
    b.at("2026-05-01T00:00:00")
    assert len(b.ledger.workspace_events("ws")) == count
    assert [i.purpose for i in all_invoices(b)] == ["subscription", "renewal"]
