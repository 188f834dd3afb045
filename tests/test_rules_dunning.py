"""Dunning (R8, R19, R20): a failed renewal is retried on the catalog's days, then the final action
(suspend or cancel); a past-due workspace never renews over its open invoice; pay-invoice pays
every open invoice, oldest first."""

from __future__ import annotations

import json

import pytest
from eventsourcing.persistence import StoredEvent
from typer.testing import CliRunner

from adapters.cli import app
from domain import clock
from domain.catalog import CatalogError, parse_catalog
from projections.upcoming_invoice import period_end_invoice
from tests.conftest import Book, utc
from tests.support import D, DECLINED, VISA, catalog_variant, refused, state

SUBSCRIBE = {"forms": {"plan": "pro"}, "workspace": {"plan": "team", "seats": 2},
             "operations": {"plan": "core", "tier": 10_000}}
PRICE = {"forms": D("19.00"), "workspace": D("16.00"), "operations": D("10.59")}


def declined_at_renewal(book, catalog, base=None, ws="ws"):
    """Subscribed on Apr 1 with a good card (on `catalog`, a built-in one or a variant of `base`),
    then only a declined card on file."""
    b = book(catalog, "2026-04-01T00:00:00")
    assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    assert b.do(ws, "subscribe", **SUBSCRIBE[base or catalog]).ok
    assert b.do(ws, "add-payment-method", payment_method=DECLINED).ok
    return b


def events(b, name, ws="ws"):
    return [e for e in b.ledger.workspace_events(ws) if type(e).__name__ == name]


@pytest.mark.parametrize("catalog", ["forms", "workspace", "operations"])
def test_R8_failed_renewal_is_retried_on_the_catalog_days_then_suspended(book, catalog):
    """Built-in policy: retries 3, 5 and 7 days after the failure, each a scheduler item asking
    for the same invoice under a new attempt and key; after the last, the workspace is
    suspended (paid features locked, R19) and June does not renew over May's invoice."""
    b = declined_at_renewal(book, catalog)
    b.at("2026-05-01T00:00:00")
    (failed,) = events(b, "PaymentFailed")
    invoice = failed.invoice_id
    assert (failed.failed_at, failed.retry_at) == (utc("2026-05-01T00:00:00"), utc("2026-05-04T00:00:00"))
    assert state(b, "ws")["status"] == "past_due"
    b.at("2026-06-15T00:00:00")  # the test clock stops on each retry day on the way
    retries = [e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]
    assert [(e.timestamp, e.attempt, e.charge_key) for e in retries] == [
        (utc(f"2026-05-0{day}T00:00:00"), n, f"ws:{invoice}:{n}") for day, n in ((4, 2), (6, 3), (8, 4))]
    assert all((e.actor_role, e.channel) == ("system", "scheduler") for e in retries)
    assert [e.retry_at for e in events(b, "PaymentFailed")] == [
        utc("2026-05-04T00:00:00"), utc("2026-05-06T00:00:00"), utc("2026-05-08T00:00:00"), None]
    (suspended,) = events(b, "WorkspaceSuspended")
    assert suspended.invoice_id == invoice
    s = state(b, "ws")
    free = next((p for p in b.ledger.catalog_for(b.sub("ws")).plans if p.kind == "free"), None)
    assert (s["status"], s["features"]) == ("suspended", free.features if free else [])  # paid ones locked (R19)
    assert s["open_invoices"] == [{"id": invoice, "amount_due": str(PRICE[catalog]), "retry_at": None}]
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal"]


def test_R8_a_late_scheduler_tries_the_card_once_and_keeps_the_gaps_between_retries(book):
    """A scheduler that did not run from May 1 to May 20 finds the May 4 retry overdue: it tries
    the card once, at its run, and the next retry comes the catalog's gap (two days) after that
    attempt, not at once; the period end waits for the retries, then the workspace is suspended
    after the last one, never renewed over the unpaid invoice."""
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-01T00:00:00")
    b.scheduler_down_until("2026-05-20T12:00:00")
    retries = [e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]
    assert [e.timestamp for e in retries] == [utc("2026-05-20T12:00:00")]
    assert events(b, "PaymentFailed")[-1].retry_at == utc("2026-05-22T12:00:00")
    assert state(b, "ws")["open_invoices"][0]["retry_at"] == "2026-05-22T12:00:00Z"
    b.scheduler_down_until("2026-06-03T00:00:00")  # its next run: after the period's end (June 1)
    retries = [e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]
    assert [e.timestamp for e in retries] == [utc("2026-05-20T12:00:00"), utc("2026-06-03T00:00:00")]
    assert (state(b, "ws")["status"], events(b, "PaymentFailed")[-1].retry_at) == ("past_due", utc("2026-06-05T00:00:00"))
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal"]
    b.at("2026-06-05T00:00:00")
    assert state(b, "ws")["status"] == "suspended"
    assert len([e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]) == 3
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal"]
    stamps = [e.timestamp for e in b.ledger.workspace_events("ws")]
    assert stamps == sorted(stamps)  # every fact at or after the one before it


def test_R8_retries_without_a_card_keep_the_gaps_and_end_in_the_final_action(book):
    """No card on file: each retry fails without a charge, on its own day, late or not."""
    b = book("forms", "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", **SUBSCRIBE["forms"]).ok
    assert b.do("ws", "remove-payment-method", payment_method=VISA).ok
    b.at("2026-05-01T00:00:00")
    b.scheduler_down_until("2026-05-10T00:00:00")
    failures = events(b, "PaymentFailed")
    assert [(f.decline_code, f.retry_at) for f in failures] == [
        ("no_payment_method", utc("2026-05-04T00:00:00")), ("no_payment_method", utc("2026-05-12T00:00:00"))]
    b.at("2026-06-15T00:00:00")
    assert [f.retry_at for f in events(b, "PaymentFailed")][2:] == [utc("2026-05-14T00:00:00"), None]
    assert state(b, "ws")["status"] == "suspended"
    assert not [e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]


def test_R8_a_period_end_waits_for_the_retries_then_renews_from_the_boundary_once_paid(book):
    """Retries pushed past the period's end by a late scheduler: June 1 neither renews over May's
    unpaid invoice nor suspends before the retry still scheduled; paid on June 1 with a new card,
    the workspace renews for the period from the boundary."""
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-01T00:00:00")
    b.scheduler_down_until("2026-05-31T12:00:00")
    assert events(b, "PaymentFailed")[-1].retry_at == utc("2026-06-02T12:00:00")
    b.scheduler_down_until("2026-06-01T06:00:00")
    assert (state(b, "ws")["status"], len(events(b, "PeriodRenewed"))) == ("past_due", 1)
    forecast = period_end_invoice(b.sub("ws"), b.ledger.catalog_for(b.sub("ws")))  # the upcoming invoice's
    assert forecast is not None and forecast[1].amount_due == PRICE["forms"]
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    b.at("2026-06-01T07:00:00")
    s = state(b, "ws")
    assert (s["status"], s["open_invoices"]) == ("active", [])
    renewal = events(b, "PeriodRenewed")[-1]
    assert (renewal.period_start, renewal.period_end) == (utc("2026-06-01T00:00:00"), utc("2026-07-01T00:00:00"))
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal", "renewal"]


def test_R8_a_retry_that_succeeds_restores_active_and_renewals_go_on(book):
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-02T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    b.at("2026-05-04T00:00:00")
    assert (b.sub("ws").status, b.sub("ws").open_invoice) == ("active", None)
    assert events(b, "PaymentSucceeded")[-1].timestamp == utc("2026-05-04T00:00:00")
    b.at("2026-06-01T00:00:00")
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal", "renewal"]


def test_R8_the_customers_own_failed_payment_does_not_move_the_schedule(book):
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-02T00:00:00")
    assert b.do("ws", "pay-invoice").error.code == "payment_failed"
    assert events(b, "PaymentFailed")[-1].retry_at == utc("2026-05-04T00:00:00")
    b.at("2026-05-08T00:00:00")
    assert b.sub("ws").status == "suspended"
    assert len([e for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"]) == 3


def test_R19_suspended_workspace_has_paid_features_locked_until_it_pays(book):
    """Suspended: AI credits and operations are locked (workspace_suspended), plan changes wait
    for the open invoice (R8); paying it before the period ends keeps the period."""
    b = declined_at_renewal(book, "workspace")
    b.at("2026-05-08T00:00:00")
    assert b.sub("ws").status == "suspended"
    refused(b, "ws", "workspace_suspended", "consume-ai-credits", credits=1)
    refused(b, "ws", "workspace_suspended", "buy-ai-credits", pack="ai-1000")
    refused(b, "ws", "open_invoice", "change-plan", plan="free")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    paid = b.do("ws", "pay-invoice")
    assert paid.ok and [type(e).__name__ for e in paid.events][-2:] == ["PaymentSucceeded", "WorkspaceReactivated"]
    (reactivated,) = events(b, "WorkspaceReactivated")
    assert reactivated.restart_at is None
    s = state(b, "ws")
    assert (s["status"], s["period_end"], s["open_invoices"]) == ("active", "2026-06-01T00:00:00Z", [])
    assert "ai_assistant" in s["features"]
    assert b.do("ws", "consume-ai-credits", credits=1).ok


def test_R25_preview_of_pay_invoice_shows_the_invoice_paid_and_the_workspace_reactivated(book):
    """A preview assumes the money it asks for is paid. Before, pay-invoice's preview showed the
    charge requested and the invoice still open, the workspace still suspended."""
    b = declined_at_renewal(book, "workspace")
    b.at("2026-05-08T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    preview = b.preview("ws", "pay-invoice")
    assert [type(e).__name__ for e in preview.events][-2:] == ["PaymentSucceeded", "WorkspaceReactivated"]
    assert (preview.subscription.status, preview.subscription.open_invoices()) == ("active", [])
    paid = b.do("ws", "pay-invoice")
    assert [type(e).__name__ for e in paid.events] == [type(e).__name__ for e in preview.events]


def test_R19_suspended_operations_workspace_cannot_run_operations(book):
    b = declined_at_renewal(book, "operations")
    b.at("2026-05-08T00:00:00")
    refused(b, "ws", "workspace_suspended", "record-usage", operations=1)


def test_R8_paying_after_the_period_ran_out_restarts_the_subscription_at_the_payment(book):
    b = declined_at_renewal(book, "workspace")
    b.at("2026-07-10T00:00:00")
    assert [e.purpose for e in events(b, "InvoiceIssued")] == ["subscription", "renewal"]
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    assert events(b, "WorkspaceReactivated")[0].restart_at == utc("2026-07-10T00:00:00")
    b.at("2026-07-10T00:00:00")
    s = state(b, "ws")
    assert (s["status"], s["period_start"], s["period_end"]) == (
        "active", "2026-07-10T00:00:00Z", "2026-08-10T00:00:00Z")
    renewal = events(b, "InvoiceIssued")[-1]
    assert (renewal.purpose, renewal.amount_due) == ("renewal", D("16.00"))
    assert state(b, "ws")["ai_credits_granted"] == 200


def test_R8_cancel_final_action_on_a_custom_catalog(book, tmp_path):
    """`dunning_retry_days = [2, 4]`, `dunning_final_action = "cancel"`: two retries, then the
    subscription ends; the open invoice still blocks a new subscription until it is paid (R20)."""
    b = declined_at_renewal(book, catalog_variant(tmp_path, "workspace", "workspace-dunning-cancel",
                                                  dunning_retry_days="[2, 4]", dunning_final_action='"cancel"'), "workspace")
    b.at("2026-06-15T00:00:00")
    assert [e.timestamp for e in events(b, "ChargeRequested") if e.purpose == "dunning_retry"] == [
        utc("2026-05-03T00:00:00"), utc("2026-05-05T00:00:00")]
    (canceled,) = events(b, "SubscriptionCanceled")
    assert canceled.plan == "team"
    assert (state(b, "ws")["status"], state(b, "ws")["plan"]) == ("canceled", None)
    refused(b, "ws", "open_invoice", "subscribe", plan="team", seats=2)
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    assert b.sub("ws").status == "canceled"
    assert b.do("ws", "subscribe", plan="team", seats=2).ok


def test_R8_no_retry_days_applies_the_final_action_at_the_first_failure(book, tmp_path):
    b = declined_at_renewal(book, catalog_variant(tmp_path, "forms", "forms-no-retries", dunning_retry_days="[]"), "forms")
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").status == "suspended"
    assert [e.purpose for e in events(b, "ChargeRequested")][-1] == "renewal"


def test_R8_cancel_while_suspended_ends_the_subscription_at_once(book):
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-08T00:00:00")
    assert [type(e).__name__ for e in b.do("ws", "cancel").events] == ["SubscriptionCanceled"]
    assert b.sub("ws").open_invoice is not None


def test_R8_pay_invoice_pays_every_open_invoice_oldest_first(book, tmp_path):
    """Two open invoices (a declined renewal, then the final invoice of billed overage when the
    scheduled cancellation applies): state lists both; pay-invoice without an id asks for each,
    oldest first, one charge per invoice, each settled by the ledger."""
    b = declined_at_renewal(book, catalog_variant(tmp_path, "operations", "ops-bill", overage='"bill"'), "operations")
    b.at("2026-05-02T00:00:00")
    assert b.do("ws", "record-usage", operations=20_000).ok
    assert b.do("ws", "cancel").ok
    b.at("2026-06-01T00:00:00")
    s = state(b, "ws")
    assert s["status"] == "canceled"
    renewal, final = [e for e in events(b, "InvoiceIssued") if e.purpose in ("renewal", "final")]
    assert [i["id"] for i in s["open_invoices"]] == [renewal.invoice_id, final.invoice_id]
    assert s["open_invoice"] == renewal.invoice_id
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    paid = b.do("ws", "pay-invoice")
    assert paid.ok
    requested = [e for e in paid.events if type(e).__name__ == "ChargeRequested"]
    assert [(e.invoice_id, e.amount) for e in requested] == [(renewal.invoice_id, D("10.59")),
                                                           (final.invoice_id, D("10.59"))]
    assert [type(e).__name__ for e in paid.events].count("PaymentSucceeded") == 2
    assert state(b, "ws")["open_invoices"] == []


def test_R8_pay_invoice_with_an_id_pays_only_that_one(book):
    b = declined_at_renewal(book, "forms")
    b.at("2026-05-01T00:00:00")
    invoice = b.sub("ws").open_invoice
    refused(b, "ws", "no_open_invoice", "pay-invoice", invoice="in_ws_0099")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice", invoice=invoice).ok


@pytest.mark.parametrize(("days", "problem"), [("[3, 30]", "1 to 27"), ("[5, 3]", "increase"), ("[0]", "1 to 27")])
def test_R8_retry_days_must_end_before_the_next_renewal(days, problem):
    text = f'id = "c"\nversion = "1"\nname = "c"\ncurrency = "USD"\n[policy]\ndunning_retry_days = {days}\n' \
           '[[plans]]\nid = "free"\nname = "Free"\nrank = 0\nkind = "free"\nstorage_gb = 1\n'
    with pytest.raises(CatalogError, match=problem):
        parse_catalog(text)


def test_R8_advance_on_a_pinned_test_clock_retries_on_each_retry_day(tmp_path, monkeypatch):
    """`subledger advance` with SUBLEDGER_TEST_CLOCK lives the time up to it, as scenarios and the
    HTTP test clock do: the renewal fails on May 1 and the card is retried on May 4, 6 and 8. A
    workspace whose last fact (May 10) came after its own renewal fell due joins at that fact,
    holding nobody else back; one whose charge waits for 3-D Secure is asked at each stop."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
        assert b.do("ws", "subscribe", plan="pro").ok
        assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
        assert b.do("late", "add-payment-method", payment_method=VISA).ok
        assert b.do("late", "subscribe", plan="pro").ok
        assert b.do("late", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
        b.clock.move_to(utc("2026-04-20T00:00:00"))
        assert b.do("late", "change-plan", plan="team").error.code == "payment_action_required"
        b.clock.move_to(utc("2026-05-10T00:00:00"))  # no scheduler ran: both renewals (May 1) are still due
        assert b.ledger.abandon_payment("late")  # a fact after late's renewal fell due
        assert b.do("3ds", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
        assert b.do("3ds", "subscribe", plan="pro").error.code == "payment_action_required"
    finally:
        b.close()
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-06-15T00:00:00Z")
    result = CliRunner().invoke(app, ["--db", db, "--json", "advance"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["at"] == "2026-06-15T00:00:00Z"
    after = Book(db, "forms", "2026-06-15T00:00:00")
    try:
        requested = [e.timestamp for e in events(after, "ChargeRequested") if e.purpose != "subscription"]
        assert requested == [utc(f"2026-05-0{day}T00:00:00") for day in (1, 4, 6, 8)]
        assert state(after, "ws")["status"] == "suspended"
        assert state(after, "3ds")["status"] == "none"  # asked at each stop from May 10: the customer never authenticated
        renewed = [e.timestamp for e in events(after, "PeriodRenewed", "late")]
        assert renewed[0] == utc("2026-05-01T00:00:00")  # recorded at its May 10 stop, stamped when it fell due
    finally:
        after.close()



def test_R8_an_advance_cut_short_keeps_what_it_recorded_and_the_next_one_goes_on(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = declined_at_renewal(lambda catalog, start: Book(db, catalog, start), "forms")
    b.close()
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-06-15T00:00:00Z")
    monkeypatch.setattr(clock, "MAX_STOPS", 2)
    cut = CliRunner().invoke(app, ["--db", db, "--json", "advance"])
    assert cut.exit_code == 2 and "what fell due up to 2026-05-06T00:00:00+00:00 is recorded" in cut.stdout
    shown = json.loads(CliRunner().invoke(app, ["--db", db, "--json", "show", "ws"]).stdout)
    assert shown["status"] == "past_due"  # the read models hold what was recorded
    monkeypatch.setattr(clock, "MAX_STOPS", 100)
    assert CliRunner().invoke(app, ["--db", db, "--json", "advance"]).exit_code == 0
    after = Book(db, "forms", "2026-06-15T00:00:00")
    try:
        requested = [e.timestamp for e in events(after, "ChargeRequested") if e.purpose != "subscription"]
        assert requested == [utc(f"2026-05-0{day}T00:00:00") for day in (1, 4, 6, 8)]
    finally:
        after.close()


def test_advance_on_a_pinned_clock_before_a_workspace_s_last_fact_names_what_it_left(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
        assert b.do("ws", "subscribe", plan="pro").ok
        assert b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired").ok
        b.clock.move_to(utc("2026-04-20T00:00:00"))
        assert b.do("ws", "change-plan", plan="team").error.code == "payment_action_required"
        b.clock.move_to(utc("2026-05-10T00:00:00"))
        assert b.ledger.abandon_payment("ws")  # its May 1 renewal is still due
        head = b.sub("ws").version
    finally:
        b.close()
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-05-05T00:00:00Z")
    result = CliRunner().invoke(app, ["--db", db, "--json", "advance"])
    assert result.exit_code == 0 and json.loads(result.stdout)["behind"] == {"ws": "2026-05-10T00:00:00Z"}
    assert "ws: left for a later advance" in CliRunner().invoke(app, ["--db", db, "advance"]).stderr
    after = Book(db, "forms", "2026-05-10T00:00:00")
    try:
        assert after.sub("ws").version == head  # nothing recorded before its last fact
    finally:
        after.close()


def suspended_with_a_cancellation_scheduled(book, catalog="workspace"):
    """The May 1 renewal declined (past due), the customer cancels (for Jun 1), the retries fail: suspended."""
    b = declined_at_renewal(book, catalog)
    b.at("2026-05-01T12:00:00")
    assert b.do("ws", "cancel").ok
    b.at("2026-05-08T00:00:00")
    assert b.sub("ws").status == "suspended"
    return b


def test_R19_keeping_the_plan_does_not_lift_a_suspension_the_open_invoice_holds(book):
    """"Keep current plan" while suspended read `past_due`, and locked features came back unpaid."""
    b = suspended_with_a_cancellation_scheduled(book)
    assert b.do("ws", "cancel-change").ok
    s = state(b, "ws")
    assert (s["status"], s["scheduled_change"]) == ("suspended", None) and s["open_invoices"]
    assert "ai_assistant" not in s["features"]
    refused(b, "ws", "workspace_suspended", "consume-ai-credits", credits=10)
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    assert state(b, "ws")["status"] == "active"
    assert b.do("ws", "consume-ai-credits", credits=10).ok


def test_R8_paying_a_suspended_workspace_keeps_its_scheduled_cancellation_in_its_status(book):
    """Paid up, it read `active` while it was still to be cancelled at the period end."""
    b = suspended_with_a_cancellation_scheduled(book, "forms")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "pay-invoice").ok
    s = state(b, "ws")
    assert (s["status"], s["scheduled_change"]["kind"]) == ("cancel_scheduled", "cancel")
    assert b.do("ws", "cancel-change").ok
    assert state(b, "ws")["status"] == "active"


def test_R19_a_withdrawn_cancellation_recorded_by_older_code_still_reads_as_it_did(book):
    """Facts are never re-read under new rules: a CancellationCancelled of v2 (no `status`) still
    leaves the workspace past due, as that code recorded it; only facts recorded from v3 on decide it."""
    b = suspended_with_a_cancellation_scheduled(book)
    (current,) = [e for e in b.preview("ws", "cancel-change").events if type(e).__name__ == "CancellationCancelled"]
    assert current.status == "suspended"
    stored = b.ledger.mapper.to_stored_event(current)
    old = json.loads(stored.state)
    assert old.pop("class_version") == 3 and old.pop("status") == "suspended"
    b.ledger.recorder.insert_events([StoredEvent(originator_id=stored.originator_id, topic=stored.topic,
                                                 originator_version=current.originator_version,
                                                 state=json.dumps({**old, "class_version": 2}).encode())])
    assert (b.sub("ws").status, b.sub("ws").scheduled) == ("past_due", None)
