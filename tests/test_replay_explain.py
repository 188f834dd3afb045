"""`replay explain`: the seed worked examples, line by line, from the events alone (R13, R16, R18)."""

from __future__ import annotations

import json

import pytest

from domain.catalog import load_catalog
from domain.errors import LedgerError
from projections.store import dumps
from replay import explain_format
from replay.explain import explain
from tests.support import forms_on, only_invoice


def seen(doc):
    return [(line["kind"], line["amount"], line["rules"]) for line in doc["lines"]]


def test_R13_explains_pro_to_team_ten_days_in_as_credit_charge_and_due(book):
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    upgrade = b.do("ws", "change-plan", plan="team")
    invoice = only_invoice(upgrade)
    doc = explain(b.ledger, invoice.invoice_id)
    assert seen(doc) == [("plan_credit", "-12.67", ["R13"]), ("plan_charge", "32.67", ["R11", "R13"])]
    credit, charge = doc["lines"]
    assert credit["derivation"] == ("Unused time on Pro (monthly) = 19.00 x 1 x 20/30 days = 12.666667 -> 12.67 "
                                    "(credit, R13)")
    assert charge["derivation"] == ("Team (monthly), remaining time = 49.00 x 1 x 20/30 days = 32.666667 -> 32.67 "
                                    "(R11, R13)")
    assert doc["totals"]["derivation"][:3] == ["subtotal -12.67 + 32.67 = 20.00",
                                               "credit applied 0.00 (R27: never above the bill)", "due 20.00"]
    forms = load_catalog("forms")
    assert doc["catalog"]["version"] == "forms@2026-11-23" and doc["catalog"]["content_hash"] == forms.content_hash
    assert {"item": "Pro per month", "price": "19.00"} in doc["catalog"]["prices"]
    assert {"item": "Team per month", "price": "49.00"} in doc["catalog"]["prices"]
    assert doc["command"] | {"at": None} == {"id": upgrade.command_id, "name": "change-plan", "at": None,
                                             "actor": {"id": "alice", "role": "admin"}, "channel": "api",
                                             "reason": None, "idempotency_key": None}
    assert [e["type"] for e in doc["events"]] == ["ChargeRequested", "PlanUpgraded", "InvoiceIssued", "PaymentSucceeded"]
    assert {e["command_id"] for e in doc["events"]} == {upgrade.command_id}
    assert credit["events"] == [f"ws:{invoice.originator_version - 1}", f"ws:{invoice.originator_version}"]


def test_R16_explains_the_unused_operations_credit_at_the_old_price_per_operation(book):
    b = book("operations", "2026-03-01T00:00:00")
    b.do("ops", "add-payment-method", payment_method="pm_card_visa")
    b.do("ops", "subscribe", plan="core", tier=150_000, interval="month")
    b.do("ops", "buy-operations", operations=10_000)
    invoice = only_invoice(b.do("ops", "change-plan", plan="pro", tier=150_000))
    doc = explain(b.ledger, invoice.invoice_id)
    assert seen(doc) == [("operations_credit", "-121.44", ["R16", "R27"]), ("plan_charge", "190.00", ["R11", "R16"])]
    assert doc["lines"][0]["formula"] == "(113.85 / 150,000 ops = 0.000759/op) x 160,000 unused = 121.440000 -> 121.44"
    assert doc["totals"]["amount_due"] == "68.56"
    assert any(f.startswith("160,000 unused operations became a credit of 121.44") for f in doc["facts"])
    assert {"item": "Core 150,000 operations per month", "price": "113.85"} in doc["catalog"]["prices"]


def test_R18_explains_carried_operations_ten_thousand_plus_forty_thousand(book):
    b = book("operations", "2026-03-01T00:00:00")
    b.do("ops", "add-payment-method", payment_method="pm_card_visa")
    b.do("ops", "subscribe", plan="pro", tier=150_000, interval="month")
    b.do("ops", "record-usage", operations=140_000)
    invoice = only_invoice(b.do("ops", "change-plan", plan="pro", tier=40_000))
    doc = explain(b.ledger, invoice.invoice_id)
    assert seen(doc) == [("plan_charge", "62.00", ["R18"])]
    carried = [f for f in doc["facts"] if f.startswith("operations:")]
    assert carried == ["operations: 10,000 carried over + 40,000 of the new tier = 50,000 operations in the first "
                       "cycle; the carried ones last until 2026-03-31T00:00:00Z (R18)"]


def test_one_line_json_and_markdown_for_a_support_reply(book):
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    invoice_id = only_invoice(b.do("ws", "change-plan", plan="team")).invoice_id
    doc = explain(b.ledger, invoice_id, line=2)
    assert [line["n"] for line in doc["lines"]] == [2]
    assert json.loads(dumps(doc))["lines"][0]["amount"] == "32.67"
    md = explain_format.markdown(explain(b.ledger, invoice_id))
    assert "| 1 | Unused time on Pro (monthly) | -12.67 | 19.00 x 1 x 20/30 days = 12.666667 -> 12.67 | R13 |" in md
    assert "| | **Due** | **20.00** | | |" in md
    text = explain_format.text(explain(b.ledger, invoice_id))
    assert "Unused time on Pro (monthly) = 19.00 x 1 x 20/30 days = 12.666667 -> 12.67 (credit, R13)" in text


def test_a_renewal_and_unknown_invoices_and_lines(book):
    b = forms_on(book, "pro")
    b.at("2026-05-01T00:00:00")
    doc = explain(b.ledger, "in_ws_0002")
    assert (doc["purpose"], doc["command"]["name"]) == ("renewal", "period_end")
    assert seen(doc) == [("plan_charge", "19.00", ["R26"])]
    assert doc["events"][0]["actor"] == "scheduler"
    with pytest.raises(LedgerError) as missing:
        explain(b.ledger, "in_ws_0099")
    assert missing.value.code == "not_found"
    with pytest.raises(LedgerError) as bad_line:
        explain(b.ledger, "in_ws_0002", line=3)
    assert bad_line.value.code == "invalid_request"


def test_R12_a_declined_upgrade_s_void_invoice_is_explained_from_its_charge_request(book):
    """Never issued, so no InvoiceIssued: the lines and arithmetic the request held, and that the
    invoice is void because the card was declined (the failure event)."""
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    b.do("ws", "add-payment-method", payment_method="pm_card_chargeDeclined")
    refused = b.do("ws", "change-plan", plan="team")
    assert refused.error.code == "payment_failed"
    request, declined = refused.events
    (held,) = [e["fields"]["invoice_id"] for e in request.effects if e["type"] == "InvoiceIssued"]
    doc = explain(b.ledger, held)
    assert seen(doc) == [("plan_credit", "-12.67", ["R13"]), ("plan_charge", "32.67", ["R11", "R13"])]
    assert doc["lines"][1]["derivation"] == ("Team (monthly), remaining time = 49.00 x 1 x 20/30 days = 32.666667 "
                                             "-> 32.67 (R11, R13)")
    refs = [f"ws:{request.originator_version}", f"ws:{declined.originator_version}"]
    assert doc["lines"][0]["events"] == refs and [e["id"] for e in doc["events"]] == refs
    assert doc["void"]["reason"] == ("void: the charge of 20.00 for this upgrade was declined on 2026-04-11T00:00:00Z "
                                     "(card_declined: Your card was declined.), so the invoice was never issued: "
                                     "nothing was bought and nothing is owed (R12)")
    assert doc["totals"]["derivation"][-1] == "owed 0.00: void, its charge was declined (R12)"
    assert {"item": "Team per month", "price": "49.00"} in doc["catalog"]["prices"]
    text = explain_format.text(doc)
    assert "VOID, requested 2026-04-11T00:00:00Z" in text and doc["void"]["reason"] in text
    b.at("2026-04-12T00:00:00")
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    paid = only_invoice(b.do("ws", "change-plan", plan="team"))
    assert paid.invoice_id != held and explain(b.ledger, paid.invoice_id)["void"] is None


def test_R12_an_abandoned_3d_secure_upgrade_s_void_invoice_says_the_customer_never_authenticated(book):
    """requires_action, then canceled: the card was never refused, so the explanation does not say
    declined; it says what happened (a customer reads it in the support reply)."""
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    b.do("ws", "add-payment-method", payment_method="pm_card_authenticationRequired")
    waiting = b.do("ws", "change-plan", plan="team")
    assert waiting.error.code == "payment_action_required"
    request = next(e for e in waiting.events if type(e).__name__ == "ChargeRequested")
    (held,) = [e["fields"]["invoice_id"] for e in request.effects if e["type"] == "InvoiceIssued"]
    b.at("2026-04-11T09:30:00")
    (canceled,) = b.ledger.abandon_payment("ws")
    assert canceled.decline_code == "canceled"
    doc = explain(b.ledger, held)
    assert doc["void"]["reason"] == (
        "void: the customer never completed the card authentication (3-D Secure) their bank asked for on "
        "2026-04-11T00:00:00Z, so the charge of 20.00 for this upgrade was canceled on 2026-04-11T09:30:00Z and "
        "the invoice was never issued: nothing was bought and nothing is owed (R12)")
    assert (doc["void"]["outcome"], doc["void"]["decline_code"]) == ("canceled", "canceled")
    assert doc["totals"]["derivation"][-1] == "owed 0.00: void, its charge was canceled (R12)"
    told = explain_format.text(doc).split("Events of the command:")[0]  # above the events' own log lines
    for shown in (told, explain_format.markdown(doc)):
        assert "never completed the card authentication" in shown and "declined" not in shown.lower(), shown
    assert explain(b.ledger, held)["void"]["reason"] == doc["void"]["reason"]  # from the events alone, again


def test_explain_says_how_the_invoice_was_collected_since_by_whichever_command(book):
    """A renewal declined on May 1 and paid with pay-invoice on May 3: explain listed only the
    failure, so support read a failed charge on an invoice that was paid."""
    b = forms_on(book, "pro")
    assert b.do("ws", "add-payment-method", payment_method="pm_card_chargeDeclined").ok
    b.at("2026-05-03T00:00:00")
    [renewal] = b.sub("ws").open_invoices()
    assert explain(b.ledger, renewal)["collection"]["status"] == "open"
    assert b.do("ws", "add-payment-method", payment_method="pm_card_visa").ok
    assert b.do("ws", "pay-invoice").ok
    doc = explain(b.ledger, renewal)
    assert doc["collection"]["status"] == "paid"
    assert [a.split(" on ")[0] for a in doc["collection"]["attempts"]] == ["payment of 19.00 failed", "paid 19.00"]
    assert "Collection: paid" in explain_format.text(doc) and "**Collection: paid**" in explain_format.markdown(doc)


def test_a_void_invoice_names_what_was_bought_in_words(book):
    """It read "the charge of 10.00 for this ai_credit_pack": a code, pasted into a reply."""
    b = book("workspace", "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method="pm_card_visa").ok
    assert b.do("ws", "subscribe", plan="team", interval="month", seats=2).ok
    assert b.do("ws", "add-payment-method", payment_method="pm_card_chargeDeclined").ok
    request, _ = b.do("ws", "buy-ai-credits", pack="ai-1000").events
    (held,) = [e["fields"]["invoice_id"] for e in request.effects if e["type"] == "InvoiceIssued"]
    assert "for this AI credit pack was declined" in explain(b.ledger, held)["void"]["reason"]
