"""`replay what-if`: the recorded history re-priced in memory; the same pricing changes nothing,
one changed price changes exactly the invoices it prices."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.catalog import load_catalog, parse_catalog
from domain.errors import LedgerError
from replay.what_if import Pricing, diff, parse_policy, what_if, write_csv
from tests.conftest import utc
from tests.replay_histories import recorded, scripts
from tests.support import D, forms_on


def forms_with(old: str, new: str, version: str = "2027-01-01"):
    text = resources.files("domain.catalogs").joinpath("forms.toml").read_text("utf-8")
    assert old in text
    return parse_catalog(text.replace(old, new).replace('version = "2026-11-23"', f'version = "{version}"'))


def changed(report):
    return [(i["invoice_id"], i["status"], i["amount_due"]["recorded"], i["amount_due"]["what_if"],
             [(line["kind"], line["recorded"], line["what_if"]) for line in i["lines"]])
            for ws in report["workspaces"] for i in ws["invoices"] if i["status"] != "same"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog=st.sampled_from(["forms", "workspace", "operations"]), data=st.data())
def test_the_same_pricing_gives_zero_differences_on_random_histories(catalog, data):
    with recorded(catalog, data.draw(scripts(catalog))) as b:
        for pricing in (Pricing(), Pricing(catalog=load_catalog(catalog))):
            report = what_if(b.ledger, pricing)
            assert [ws["refused"] for ws in report["workspaces"]] == [[], []]
            assert changed(report) == []
            assert report["summary"]["invoices"] == sum(
                1 for ws in ("w1", "w2") for e in b.ledger.workspace_events(ws) if type(e).__name__ == "InvoiceIssued")


def test_one_changed_price_changes_exactly_the_invoices_it_prices(book):
    """Team 49.00 -> 59.00: the R13 upgrade charges 59.00 x 20/30 = 39.33 (due 26.66), the May
    renewal 59.00; Pro's subscription and a workspace that never had Team are unchanged."""
    b = forms_on(book, "pro")
    b.do("other", "add-payment-method", payment_method="pm_card_visa")
    b.do("other", "subscribe", plan="pro", interval="month")
    b.at("2026-04-11T00:00:00").do("ws", "change-plan", plan="team")
    b.at("2026-05-02T00:00:00")
    report = what_if(b.ledger, Pricing(catalog=forms_with('month = "49.00"', 'month = "59.00"')))
    assert changed(report) == [
        ("in_ws_0002", "changed", "20.00", "26.66", [("plan_charge", "32.67", "39.33")]),
        ("in_ws_0003", "changed", "49.00", "59.00", [("plan_charge", "49.00", "59.00")]),
    ]
    ws, other = report["workspaces"]
    assert ws["summary"]["totals"]["amount_due"] == {"recorded": "88.00", "what_if": "104.66", "delta": "16.66"}
    assert (ws["summary"]["same"], ws["summary"]["changed"], other["summary"]["differences"]) == (1, 2, 0)
    assert report["summary"]["totals"]["amount_due"]["delta"] == "16.66"
    assert b.ledger.workspace_events("ws")[-1].catalog_version == "forms@2026-11-23"  # nothing was written
    out = io.StringIO()
    assert write_csv(out, report) == 5
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["invoice_id"], r["status"], r["amount_due_delta"]) for r in rows if r["status"] != "same"] == [
        ("in_ws_0002", "changed", "6.66"), ("in_ws_0003", "changed", "10.00")]


def test_a_charge_keeps_its_recorded_outcome_when_another_pricing_shifts_the_invoice_ids(book):
    """Under immediate downgrades the Apr 15 move to Pro issues an invoice the record lacks, and
    every later invoice id moves up one. Keyed by its id, the May 10 upgrade's charge looked for
    the outcome of another invoice and stayed pending: the May 20 change was refused
    payment_pending and June renewed Team (49.00) where the customer was on Pro."""
    b = forms_on(book, "team")
    assert b.at("2026-04-15T00:00:00").do("ws", "change-plan", plan="pro").ok  # at May 1, as recorded
    assert b.at("2026-05-10T00:00:00").do("ws", "change-plan", plan="team").ok
    assert b.at("2026-05-20T00:00:00").do("ws", "change-plan", plan="pro").ok
    b.at("2026-06-02T00:00:00")
    [ws] = what_if(b.ledger, Pricing(policy=parse_policy(['downgrade_timing="immediate_credit"'])))["workspaces"]
    assert ws["refused"] == []
    assert [i["status"] for i in ws["invoices"] if i["purpose"] == "upgrade"] == ["same"]
    [june] = [i for i in ws["invoices"] if i["issued_at"].startswith("2026-06-01")]
    assert june["lines"] == [] and june["amount_due"]["what_if"] == "7.38"  # Pro's 19.00 less the credit left


def test_a_line_the_other_pricing_drops_is_shown_dropped_and_the_rest_compared_by_kind():
    """Before, lines were compared by position: the recorded credit against the what-if charge
    (`plan_credit -25.29 -> 490.00`) and the recorded charge against nothing."""
    def invoice(*lines):
        return {"invoice_id": "in_ws_0004", "issued_at": "2026-05-10T00:00:00Z", "purpose": "upgrade",
                "currency": "USD", "subtotal": sum(a for _, a in lines), "credit_applied": D(0),
                "amount_due": sum(a for _, a in lines), "credit_issued": D(0), "credit_forfeited": D(0),
                "lines": [{"kind": k, "description": k, "amount": a, "quantity": 1, "formula": f"{a}"} for k, a in lines]}
    shown = diff("ws", invoice(("plan_credit", D("-25.29")), ("plan_charge", D("490.00"))),
                 invoice(("plan_charge", D("490.00"))))
    assert [(x["n"], x["kind"], x["recorded"], x["what_if"]) for x in shown["lines"]] == [
        (1, "plan_credit", "-25.29", None)]


def test_a_policy_and_a_window_reprice_only_what_they_cover(book):
    b = forms_on(book, "pro")
    b.at("2026-04-11T12:00:00").do("ws", "change-plan", plan="team")  # half a day into Apr 11
    b.at("2026-05-02T00:00:00")
    by_day = what_if(b.ledger, Pricing(policy=parse_policy(["proration=second"])))
    assert changed(by_day) == [("in_ws_0002", "changed", "20.00", "19.50",
                                [("plan_credit", "-12.67", "-12.35"), ("plan_charge", "32.67", "31.85")])]
    later = what_if(b.ledger, Pricing(policy={"proration": "second"}, start=utc("2026-04-12T00:00:00")))
    assert changed(later) == [] and later["summary"]["invoices"] == 1
    earlier = what_if(b.ledger, Pricing(policy={"proration": "second"}, end=utc("2026-04-11T00:00:00")))
    assert changed(earlier) == [] and earlier["summary"]["invoices"] == 1


def test_another_catalogs_workspaces_are_skipped_unless_named_and_bad_policies_refused(book):
    b = forms_on(book, "pro")
    report = what_if(b.ledger, Pricing(catalog=load_catalog("workspace")))
    assert report["workspaces"] == [] and report["skipped"][0]["workspace"] == "ws"
    with pytest.raises(LedgerError, match="unknown key"):
        parse_policy(["rounding=up"])
    with pytest.raises(LedgerError, match="proration"):
        what_if(b.ledger, Pricing(policy=parse_policy(["proration=hourly"])))


def test_a_catalog_in_another_currency_is_not_compared_with_what_was_billed(book):
    """USD billed against a EUR price list would read as 'same' or subtract dollars from euros."""
    b = forms_on(book, "pro")
    euros = forms_with('currency = "USD"', 'currency = "EUR"')
    report = what_if(b.ledger, Pricing(catalog=euros))
    assert report["workspaces"] == [] and "billed in USD" in report["skipped"][0]["reason"]
    with pytest.raises(LedgerError, match="billed in USD") as named:
        what_if(b.ledger, Pricing(catalog=euros), ["ws"])
    assert named.value.code == "invalid_request"


@pytest.mark.parametrize("override", ['carry_over_days={"month": 3000000}', 'carry_over_days={"month": -40}',
                                      "operations_pack=" + "9" * 5000, 'upgrade_new_cycle="yes"',
                                      'trial_fallback="pro\\u202e"'])
def test_a_policy_override_may_set_only_what_a_catalog_file_may(book, override):
    b = forms_on(book, "pro")
    with pytest.raises(LedgerError) as refused:
        what_if(b.ledger, Pricing(policy=parse_policy([override])))
    assert refused.value.code == "invalid_request"


def test_a_window_that_ends_before_it_starts_is_refused():
    with pytest.raises(LedgerError, match="from must be before to") as refused:
        Pricing(start=utc("2026-05-01T00:00:00"), end=utc("2026-04-01T00:00:00"))
    assert refused.value.code == "invalid_request"


def test_a_contract_an_admin_set_before_R9_made_it_sales_alone_is_replayed_as_recorded(book, monkeypatch):
    """Replay re-prices what happened: it does not judge again who was allowed to do it (decided
    again as an admin's, the recorded contract would be refused)."""
    from domain import rules
    b = forms_on(book, "pro")
    allowed_then = rules.check_actor
    with monkeypatch.context() as m:  # an earlier release, where admins set contracts
        m.setattr(rules, "check_actor", lambda actor, command: None)
        assert b.do("ws", "set-contract", contract="enterprise").ok
    assert rules.check_actor is allowed_then
    assert [e.actor_role for e in b.ledger.workspace_events("ws") if type(e).__name__ == "ContractSet"] == ["admin"]
    assert b.do("ws", "change-plan", plan="team").error.code == "contact_sales"
    b.at("2026-05-02T00:00:00")
    report = what_if(b.ledger, Pricing())
    assert report["workspaces"][0]["refused"] == [] and changed(report) == []
