"""Seats, storage add-ons, AI credits, billing credits and line items on the workspace (seed 000)
and forms (seed 003) catalogs (R10, R21-R23, R26, R27), trial expiry and cancellation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import utc
from tests.support import (
    D, VISA, catalog_variant, forms_on, lines, only_invoice, refused, state, types, workspace_on,
)


def invoices(b, ws="ws"):
    return [e for e in b.ledger.workspace_events(ws) if type(e).__name__ == "InvoiceIssued"]


def event_names(b, ws="ws"):
    return [type(e).__name__ for e in b.ledger.workspace_events(ws)]


# ------------------------------------------------------------------ R10 credit, never a refund


def test_R10_downgrade_credit_is_billing_credit_never_cash_nor_ai_credits(book):
    """R10 (000): Business 10 seats -> Team 10 seats 10 days in: -100.00 + 53.33 = 46.67 of
    billing credit; nothing is paid back and no AI credit appears (the month's grant shrinks
    with the time credited back, R23)."""
    b = workspace_on(book, plan="business", seats=10)
    charges = len(b.payments.charges())
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="team")
    assert types(result) == ["AICreditsProrated", "DowngradeApplied", "InvoiceIssued", "BillingCreditIssued"]
    invoice = only_invoice(result)
    assert lines(invoice) == [("plan_credit", D("-100.00")), ("plan_charge", D("53.33"))]
    assert (invoice.subtotal, invoice.credit_applied, invoice.amount_due) == (D("-46.67"), D("0"), D("0"))
    assert result.events[-1].amount == D("46.67")
    sub = b.sub("ws")
    assert sub.billing_credit == D("46.67")
    assert (sub.ai_granted, sub.ai_purchased) == (3000 - 1334, 0)  # (3,000 - 1,000) x 20/30 taken back
    assert len(b.payments.charges()) == charges  # no refund, no charge
    assert "PaymentSucceeded" not in types(result)


def test_R10_billing_credit_only_reduces_later_invoices(book):
    """R10: the 46.67 pays part of the next renewal (80.00 -> 33.33 due)."""
    b = workspace_on(book, plan="business", seats=10)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team")
    b.at("2026-05-01T00:00:00")
    renewal = invoices(b)[-1]
    assert lines(renewal) == [("plan_charge", D("80.00"))]
    assert (renewal.credit_applied, renewal.amount_due) == (D("46.67"), D("33.33"))
    assert b.sub("ws").billing_credit == D("0")


def test_R10_downgrade_to_free_credits_unused_plan_and_add_on_time(book):
    """R10/R22 (000): Team 5 seats + 100 GB -> Free 10 days in credits both recurring items."""
    b = workspace_on(book, seats=2)
    b.do("ws", "set-storage-addon", addon="storage-100gb")
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="free")
    assert lines(only_invoice(result)) == [("plan_credit", D("-10.67")), ("addon_credit", D("-6.67"))]
    sub = b.sub("ws")
    assert (sub.plan, sub.storage_addon, sub.billing_credit) == ("free", None, D("17.34"))


def test_R10_forms_downgrade_never_credits(book):
    """R10 (003): the downgrade waits for the period end, so there is nothing to credit."""
    b = forms_on(book, plan="team")
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="pro").invoices() == []
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").billing_credit == D("0")
    assert "BillingCreditIssued" not in event_names(b)


def test_R10_annual_to_monthly_downgrade_starts_a_monthly_cycle_with_the_rest_as_credit(book):
    """R10 (000): Business annual 5 seats (750.00) -> Team monthly 10 days in: 355/365 of the
    year is billing credit, the month starts now."""
    b = workspace_on(book, plan="business", seats=5, interval="year")
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="team", interval="month")
    assert result.ok
    invoice = only_invoice(result)
    assert lines(invoice) == [("plan_credit", D("-729.45")), ("plan_charge", D("40.00"))]
    assert invoice.amount_due == D("0")
    s = state(b, "ws")
    assert (s["plan"], s["interval"], s["period_start"], s["period_end"]) == (
        "team", "month", "2026-04-11T00:00:00Z", "2026-05-11T00:00:00Z")
    assert b.sub("ws").billing_credit == D("689.45")


# ------------------------------------------------------------------ R21 seats


def test_R21_adding_seats_mid_period_charges_the_rest_of_the_period(book):
    """R21: 5 -> 8 seats 10 days into April: 3 x 8.00 x 20/30 = 16.00."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "set-seats", seats=8)
    assert types(result) == ["ChargeRequested", "SeatsChanged", "InvoiceIssued", "PaymentSucceeded"]
    invoice = only_invoice(result)
    assert lines(invoice) == [("seat_charge", D("16.00"))]
    assert invoice.lines[0]["quantity"] == 3
    assert invoice.lines[0]["period_end"] == utc("2026-05-01T00:00:00")


def test_R21_removing_seats_lowers_the_next_period_and_is_not_a_refund(book):
    """R21 (000 policy: no seat-removal credit): 5 -> 3 seats records no invoice; May bills 3 seats."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "set-seats", seats=3)
    assert types(result) == ["SeatsChanged"]
    assert b.sub("ws").billing_credit == D("0")
    b.at("2026-05-01T00:00:00")
    assert lines(invoices(b)[-1]) == [("plan_charge", D("24.00"))]


def test_R21_seats_already_paid_this_period_are_not_charged_twice(book):
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "set-seats", seats=3)
    assert types(b.do("ws", "set-seats", seats=5)) == ["SeatsChanged"]
    assert lines(only_invoice(b.do("ws", "set-seats", seats=6))) == [("seat_charge", D("5.33"))]


def test_R21_seat_removal_credit_only_where_the_catalog_policy_says_so(book, tmp_path):
    """R21 with `seat_removal_credit = true`: 10 -> 4 seats 10 days in: 6 x 8.00 x 20/30 = 32.00 credit."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-seat-credit", seat_removal_credit="true"))
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.do("ws", "subscribe", plan="team", seats=10)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "set-seats", seats=4)
    assert types(result) == ["AICreditsProrated", "SeatsChanged", "InvoiceIssued", "BillingCreditIssued"]
    assert lines(only_invoice(result)) == [("seat_credit", D("-32.00"))]
    assert b.sub("ws").billing_credit == D("32.00")
    assert b.sub("ws").ai_granted == 1000 - 400  # the credited seats' grant goes back with them (R23)


def test_R21_R27_seats_credited_back_are_charged_again_when_re_added(book, tmp_path):
    """R21/R27: after a seat-removal credit, adding the seats back is a new charge, so a second
    removal never credits more than was paid."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-seat-credit", seat_removal_credit="true"))
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.do("ws", "subscribe", plan="team", seats=10)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "set-seats", seats=4)
    assert lines(only_invoice(b.do("ws", "set-seats", seats=10))) == [("seat_charge", D("32.00"))]
    assert lines(only_invoice(b.do("ws", "set-seats", seats=4))) == [("seat_credit", D("-32.00"))]
    charged = sum(line["amount"] for inv in invoices(b) for line in inv.lines)
    assert charged == D("80.00") - D("32.00")


def seats_credited_at(book, tmp_path, price):
    """The workspace catalog with seat-removal credit, the plan priced `price` a month at 12.35
    (Team 8.00, Business 15.00), and a workspace on Team with one seat."""
    path = catalog_variant(tmp_path, "workspace", "workspace-seat-credit", seat_removal_credit="true")
    Path(path).write_text(Path(path).read_text().replace(f'prices = {{ month = "{price}"', 'prices = { month = "12.35"'))
    b = book(path)
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.do("ws", "subscribe", plan="team", seats=1)
    return b


def test_R13_R21_seats_added_then_removed_one_by_one_never_credit_a_cent_more_than_was_charged(book, tmp_path):
    """Team at 12.35 a seat, half the period left: 3 seats added are 18.525 -> 18.53; removed one
    by one, each line alone rounded 6.175 -> 6.18, so 18.54 came back and every round trip minted
    a cent. Each seat line now rounds the period's seat changes as a whole, less what the earlier
    ones billed: 6.18, 6.17, 6.18, and ten round trips leave the customer exactly where they began."""
    b = seats_credited_at(book, tmp_path, "8.00")
    b.at("2026-04-16T00:00:00")
    before = b.sub("ws").billing_credit
    for _ in range(10):
        assert lines(only_invoice(b.do("ws", "set-seats", seats=4))) == [("seat_charge", D("18.53"))]
        credits = [only_invoice(b.do("ws", "set-seats", seats=n)).lines[0] for n in (3, 2, 1)]
        assert [c["amount"] for c in credits] == [D("-6.18"), D("-6.17"), D("-6.18")]
    assert "with the period's earlier seat changes" in credits[1]["formula"]
    seat_lines = [line["amount"] for inv in invoices(b) for line in inv.lines if line["kind"].startswith("seat_")]
    assert len(seat_lines) == 40 and sum(seat_lines) == 0
    assert b.sub("ws").billing_credit - before == D("18.53")  # what the first 3 seats were paid, in cash


def test_R21_a_plan_change_starts_the_rounding_of_seat_lines_afresh(book, tmp_path):
    """Team seat lines are settled by the upgrade's credit: a Business seat removed afterwards is
    12.35 x 1 x 15/30 = 6.175 -> 6.18 by its own arithmetic, not 6.17 with Team's lines mixed in."""
    b = seats_credited_at(book, tmp_path, "15.00")
    b.at("2026-04-02T00:00:00")
    assert b.do("ws", "set-seats", seats=2).ok
    b.at("2026-04-16T00:00:00")
    assert b.do("ws", "change-plan", plan="business", seats=2).ok
    credit = only_invoice(b.do("ws", "set-seats", seats=1)).lines[0]
    assert credit["amount"] == D("-6.18") and "earlier seat changes" not in credit["formula"]


def test_R21_seat_changes_need_a_per_seat_plan(book):
    b = forms_on(book)
    refused(b, "ws", "invalid_request", "set-seats", seats=5)


def test_R21_a_change_naming_no_seats_never_takes_more_than_the_plan_sells(book):
    """Business with 1,500 seats -> Team (at most 500) without a seat count kept the 1,500 and
    billed them; a subscription with 900 members took 900. Both are refused and name the cause;
    a seat count the plan sells goes through."""
    b = workspace_on(book, "business", seats=1500)
    result = refused(b, "ws", "invalid_request", "change-plan", plan="team")
    assert "Team sells at most 500 seats" in result.error.message and "1,500" in result.error.message
    assert b.do("ws", "change-plan", plan="team", seats=400).ok
    assert b.do("new", "add-payment-method", payment_method=VISA).ok
    assert b.do("new", "set-members", members=900).ok
    refused(b, "new", "invalid_request", "subscribe", plan="team")
    assert b.do("new", "subscribe", plan="business").ok and b.sub("new").seats == 900


# ------------------------------------------------------------------ R22 storage add-ons


def test_R22_storage_add_on_is_prorated_when_bought_and_changed(book):
    """R22: 100 GB 10 days in: 10.00 x 20/30 = 6.67; -> 1 TB 20 days in: -3.33 + 16.67."""
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    bought = b.do("ws", "set-storage-addon", addon="storage-100gb")
    assert types(bought) == ["ChargeRequested", "StorageAddonChanged", "InvoiceIssued", "PaymentSucceeded"]
    assert lines(only_invoice(bought)) == [("addon_charge", D("6.67"))]
    assert state(b, "ws")["storage_limit_gb"] == 200
    b.at("2026-04-21T00:00:00")
    changed = only_invoice(b.do("ws", "set-storage-addon", addon="storage-1tb"))
    assert lines(changed) == [("addon_credit", D("-3.33")), ("addon_charge", D("16.67"))]
    assert changed.amount_due == D("13.34")
    assert state(b, "ws")["storage_limit_gb"] == 1100


def test_R22_storage_add_on_renews_with_the_subscription(book):
    b = workspace_on(book, seats=5)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "set-storage-addon", addon="storage-1tb")
    b.at("2026-06-01T00:00:00")
    renewals = [inv for inv in invoices(b) if inv.purpose == "renewal"]
    assert [lines(inv) for inv in renewals] == [
        [("plan_charge", D("40.00")), ("addon_charge", D("50.00"))],
        [("plan_charge", D("40.00")), ("addon_charge", D("50.00"))],
    ]


def test_R22_removing_the_add_on_credits_unused_time_as_billing_credit(book):
    """R22/R10: removing 1 TB 10 days into May (31 days): 50.00 x 21/31 = 33.87 billing credit."""
    b = workspace_on(book, seats=5)
    b.do("ws", "set-storage-addon", addon="storage-1tb")
    b.at("2026-05-11T00:00:00")
    result = b.do("ws", "set-storage-addon", addon=None)
    assert types(result) == ["StorageAddonChanged", "InvoiceIssued", "BillingCreditIssued"]
    assert lines(only_invoice(result)) == [("addon_credit", D("-33.87"))]
    b.at("2026-06-01T00:00:00")
    assert lines(invoices(b)[-1]) == [("plan_charge", D("40.00"))]
    assert invoices(b)[-1].amount_due == D("6.13")


def test_R22_add_on_removal_refused_while_files_need_it(book):
    """R6/R22: 150 GB used does not fit Team's 100 GB without the add-on."""
    b = workspace_on(book, seats=5)
    b.do("ws", "set-storage-addon", addon="storage-100gb")
    b.do("ws", "report-storage", gb=D("150"))
    refused(b, "ws", "storage_limit_exceeded", "set-storage-addon", addon=None)


def test_R22_add_ons_need_a_paid_plan(book):
    b = book("workspace")
    b.do("ws", "subscribe", plan="free")
    refused(b, "ws", "invalid_request", "set-storage-addon", addon="storage-100gb")


# ------------------------------------------------------------------ R23 AI credits


def test_R23_ai_credit_pack_is_a_one_time_charge_never_prorated(book):
    b = workspace_on(book, seats=5)
    b.at("2026-04-21T00:00:00")
    result = b.do("ws", "buy-ai-credits", pack="ai-5000")
    assert types(result) == ["ChargeRequested", "AICreditPackBought", "InvoiceIssued", "PaymentSucceeded"]
    (line,) = only_invoice(result).lines
    assert (line["kind"], line["amount"], line["period_end"]) == ("ai_credit_pack", D("45.00"), None)
    assert (b.sub("ws").ai_purchased, b.sub("ws").ai_granted) == (5000, 500)


def test_R23_subscription_credits_are_granted_each_cycle_by_plan_and_seats(book):
    """R23: Team 5 seats grants 500 a cycle; 8 seats from May grants 800; leftovers do not pile up."""
    b = workspace_on(book, seats=5)
    assert b.sub("ws").ai_granted == 500
    b.do("ws", "consume-ai-credits", credits=200)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "set-seats", seats=8)
    assert b.sub("ws").ai_granted == 300  # future grants change, not this cycle's
    b.at("2026-05-01T00:00:00")
    (grant,) = [e for e in b.ledger.workspace_events("ws")[-5:] if type(e).__name__ == "AICreditsGranted"]
    assert (grant.credits, grant.expired) == (800, 300)
    assert b.sub("ws").ai_granted == 800


def test_R23_purchased_credits_stay_until_spent_and_are_used_after_granted(book):
    b = workspace_on(book, seats=1)
    b.do("ws", "buy-ai-credits", pack="ai-1000")
    result = b.do("ws", "consume-ai-credits", credits=300)
    (used,) = result.events
    assert (used.from_granted, used.from_purchased) == (100, 200)
    b.at("2026-07-01T00:00:00")
    sub = b.sub("ws")
    assert (sub.ai_granted, sub.ai_purchased) == (100, 800)


def test_R23_purchased_credits_survive_downgrade_and_cancellation_and_are_not_refunded(book):
    b = workspace_on(book, plan="business", seats=2)
    b.do("ws", "buy-ai-credits", pack="ai-1000")
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="free")
    credit_lines = lines(only_invoice(result))
    assert credit_lines == [("plan_credit", D("-20.00"))]  # the pack is not credited back
    assert b.sub("ws").ai_purchased == 1000
    assert b.do("ws", "cancel").ok
    assert b.sub("ws").ai_purchased == 1000


def test_R23_ai_credits_are_a_separate_balance_from_billing_credit(book):
    b = workspace_on(book, plan="business", seats=2)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team", seats=2)
    sub = b.sub("ws")
    assert sub.billing_credit == D("9.33")
    assert (sub.ai_granted, sub.ai_purchased) == (333, 0)  # 600 - (600 - 200) x 20/30, rounded up
    refused(b, "ws", "insufficient_credits", "consume-ai-credits", credits=334)


def test_R23_consuming_more_than_the_balance_is_refused(book):
    b = workspace_on(book, seats=1)
    result = refused(b, "ws", "insufficient_credits", "consume-ai-credits", credits=101)
    assert "100 available" in result.error.message
    assert b.sub("ws").ai_granted == 100


def test_R23_unknown_pack_is_an_invalid_request(book):
    b = workspace_on(book, seats=1)
    refused(b, "ws", "invalid_request", "buy-ai-credits", pack="ai-3")


# ------------------------------------------------------------------ R26 line items


def test_R26_every_charge_and_credit_is_its_own_explained_line(book):
    """R26: Team 5 seats + 100 GB, monthly -> annual 10 days in: four lines, each with its arithmetic."""
    b = workspace_on(book, seats=5)
    b.do("ws", "set-storage-addon", addon="storage-100gb")
    b.at("2026-04-11T00:00:00")
    invoice = only_invoice(b.do("ws", "change-plan", plan="team", interval="year"))
    assert lines(invoice) == [
        ("plan_credit", D("-26.67")), ("addon_credit", D("-6.67")),
        ("plan_charge", D("400.00")), ("addon_charge", D("100.00")),
    ]
    assert invoice.subtotal == sum(line["amount"] for line in invoice.lines) == D("466.66")
    assert invoice.amount_due == invoice.subtotal - invoice.credit_applied
    credit = invoice.lines[0]
    assert credit["formula"] == "8.00 x 5 x 20/30 days = 26.666667 -> 26.67"
    assert (credit["quantity"], credit["period_start"], credit["period_end"]) == (
        5, utc("2026-04-11T00:00:00"), utc("2026-05-01T00:00:00"))
    assert all(line["description"] for line in invoice.lines)
    assert invoice.lines[2]["period_end"] == utc("2027-04-11T00:00:00")


def test_R26_renewal_lists_plan_and_add_on_separately(book):
    b = workspace_on(book, seats=3)
    b.do("ws", "set-storage-addon", addon="storage-100gb")
    b.at("2026-05-01T00:00:00")
    renewal = invoices(b)[-1]
    assert [(line["kind"], line["quantity"], line["amount"]) for line in renewal.lines] == [
        ("plan_charge", 3, D("24.00")), ("addon_charge", 1, D("10.00"))]
    assert renewal.lines[0]["formula"] == "8.00 x 3 = 24.00"


# ------------------------------------------------------------------ R27 credit capped at the bill


def test_R27_credit_never_exceeds_the_bill_and_the_rest_stays_as_balance(book):
    """R27: 94.67 of credit meets an 8.00 renewal: 8.00 applied, 86.67 stays on account."""
    b = workspace_on(book, plan="business", seats=10)
    b.at("2026-04-11T00:00:00")
    assert lines(only_invoice(b.do("ws", "change-plan", plan="team", seats=1))) == [
        ("plan_credit", D("-100.00")), ("plan_charge", D("5.33"))]
    assert b.sub("ws").billing_credit == D("94.67")
    b.at("2026-05-01T00:00:00")
    renewal = invoices(b)[-1]
    assert (renewal.subtotal, renewal.credit_applied, renewal.amount_due) == (D("8.00"), D("8.00"), D("0.00"))
    names = event_names(b)
    assert names[-2:] == ["InvoiceIssued", "BillingCreditApplied"]
    assert b.sub("ws").billing_credit == D("86.67")


def test_R27_balance_is_used_up_then_the_rest_is_charged(book):
    """R27: 86.67 of balance against a 96.19 upgrade bill: 86.67 applied, 9.52 charged."""
    b = workspace_on(book, plan="business", seats=10)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team", seats=1)
    b.at("2026-05-11T00:00:00")
    result = b.do("ws", "change-plan", plan="business", seats=10)
    invoice = only_invoice(result)
    assert lines(invoice) == [("plan_credit", D("-5.42")), ("plan_charge", D("101.61"))]
    assert (invoice.subtotal, invoice.credit_applied, invoice.amount_due) == (D("96.19"), D("86.67"), D("9.52"))
    assert types(result) == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "BillingCreditApplied", "PaymentSucceeded"]
    assert b.sub("ws").billing_credit == D("0")


# ------------------------------------------------------------------ trials


def test_unconverted_trial_falls_back_to_free_at_its_end(book):
    """Seed 000: a 14-day trial not converted becomes Free on day 14, with Free's limits."""
    b = book("workspace")
    b.do("ws", "subscribe", plan="trial")
    b.do("ws", "set-members", members=5)
    b.do("ws", "report-storage", gb=D("20"))
    b.at("2026-04-14T23:59:59")
    assert b.sub("ws").status == "trialing"
    b.at("2026-04-20T00:00:00")
    events = b.ledger.workspace_events("ws")
    (expired,) = [e for e in events if type(e).__name__ == "TrialExpired"]
    assert (expired.timestamp, expired.plan, expired.from_plan) == (utc("2026-04-15T00:00:00"), "free", "trial")
    assert (expired.actor_role, expired.channel) == ("system", "scheduler")
    s = state(b, "ws")
    assert (s["plan"], s["status"], s["seats"], s["storage_limit_gb"], s["period_end"]) == (
        "free", "active", 3, 5, None)
    assert (s["over_seat"], s["storage_read_only"]) == (True, True)
    assert invoices(b) == []


def test_trial_can_be_started_once(book):
    b = book("workspace")
    b.do("ws", "subscribe", plan="trial")
    refused(b, "ws", "already_subscribed", "subscribe", plan="trial")


# ------------------------------------------------------------------ cancellation


def test_cancel_applies_at_period_end_without_credit(book):
    b = forms_on(book)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "cancel")
    assert types(result) == ["CancellationScheduled"]
    s = state(b, "ws")
    assert (s["status"], s["plan"], s["scheduled_change"]["effective_at"]) == (
        "cancel_scheduled", "pro", "2026-05-01T00:00:00Z")
    b.at("2026-06-15T00:00:00")
    names = event_names(b)
    assert names[-1] == "SubscriptionCanceled"
    assert "PeriodRenewed" not in names and "BillingCreditIssued" not in names
    assert len(invoices(b)) == 1
    canceled = b.ledger.workspace_events("ws")[-1]
    assert canceled.timestamp == utc("2026-05-01T00:00:00")
    assert b.sub("ws").status == "canceled"


def test_cancel_can_be_withdrawn_before_it_applies(book):
    b = forms_on(book)
    b.do("ws", "cancel")
    refused(b, "ws", "invalid_request", "cancel")
    assert types(b.do("ws", "cancel-change")) == ["CancellationCancelled"]
    assert b.sub("ws").status == "active"
    b.at("2026-05-01T00:00:00")
    assert lines(invoices(b)[-1]) == [("plan_charge", D("19.00"))]


def test_cancel_on_free_is_immediate_and_a_new_subscription_can_start(book):
    b = book("forms")
    b.do("ws", "subscribe", plan="free")
    assert types(b.do("ws", "cancel")) == ["SubscriptionCanceled"]
    refused(b, "ws", "not_subscribed", "change-plan", plan="pro")
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.at("2026-04-09T00:00:00")
    assert b.do("ws", "subscribe", plan="pro").ok
    assert b.sub("ws").period_end == utc("2026-05-09T00:00:00")


@pytest.mark.parametrize("catalog", ["forms", "workspace"])
def test_canceled_subscription_is_never_billed_again(book, catalog):
    b = forms_on(book) if catalog == "forms" else workspace_on(book, seats=2)
    b.do("ws", "cancel")
    b.at("2027-01-01T00:00:00")
    assert len(invoices(b)) == 1
    assert b.sub("ws").status == "canceled"


def test_R10_R23_billing_credit_never_buys_ai_credits(book):
    """A billing credit reduces plan invoices only; an AI pack is paid in full, the credit stays."""
    b = workspace_on(book, plan="business", seats=10)
    b.at("2026-04-11T00:00:00")
    b.do("ws", "change-plan", plan="team")
    credit = b.sub("ws").billing_credit
    invoice = only_invoice(b.do("ws", "buy-ai-credits", pack="ai-1000"))
    assert (invoice.credit_applied, invoice.amount_due) == (D("0"), D("10.00"))
    assert b.sub("ws").billing_credit == credit


def test_R5_an_upgrade_never_takes_seats_below_the_active_members(book):
    b = workspace_on(book, plan="team", seats=10)
    assert b.do("ws", "set-members", members=10).ok
    refused(b, "ws", "seat_limit_exceeded", "set-seats", seats=2)
    b.at("2026-04-11T00:00:00")
    refused(b, "ws", "seat_limit_exceeded", "change-plan", plan="business", seats=2)
    assert b.do("ws", "change-plan", plan="business", seats=10).ok
