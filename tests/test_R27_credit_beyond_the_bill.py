"""R27: a credit never exceeds its bill; what the rest became (account billing credit, or dropped
under the catalog's `credit_overflow = "forfeit"`) is said by the invoice read model, the journal
and `replay explain` alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters import render
from adapters.settings import eventsourcing_env
from projections.invoices import invoices_of
from projections.journal import trial_balance
from projections.runner import Projections
from replay.explain import explain
from tests.support import VISA
from tests.test_rules_operations_policies import WITH_FREE


@pytest.mark.parametrize("overflow", ["balance", "forfeit"])
def test_R27_an_invoice_says_what_its_credit_beyond_the_bill_became(book, db_url, tmp_path, overflow):
    """Basic (10.00 a month) to the free plan on Apr 10: 21/30 of the month unused is a 7.00 credit
    on a bill of nothing. Before, the invoice read model showed only the -7.00 subtotal and 0.00
    due, and explain said nothing of a forfeited credit."""
    path = tmp_path / "free.toml"
    path.write_text(WITH_FREE.format(timing="immediate_credit").replace(
        'overage = "bill"', f'overage = "bill"\ncredit_overflow = "{overflow}"'))
    b = book(str(path), "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="basic", tier=10_000).ok
    b.at("2026-04-10T00:00:00")
    down = b.do("ws", "change-plan", plan="nada")
    [invoice] = down.invoices()
    issued, forfeited = (Decimal("7.00"), Decimal(0)) if overflow == "balance" else (Decimal(0), Decimal("7.00"))
    assert b.sub("ws").billing_credit == issued
    with Projections(eventsourcing_env(db_url), source=b.ledger) as p:
        p.catch_up()
        with p.engine.connect() as conn:
            shown = invoices_of(conn, "ws")[-1]
            books = trial_balance(conn)
    assert (shown["subtotal"], shown["amount_due"]) == ("-7.00", "0.00")
    assert (Decimal(shown["credit_issued"]), Decimal(shown["credit_forfeited"])) == (issued, forfeited)
    assert books.get("billing_credit", Decimal(0)) == -issued
    printed = render.invoices_text({"workspace": "ws", "invoices": [shown], "upcoming": None})
    became = "kept as billing credit" if overflow == "balance" else "forfeited (credit_overflow = forfeit)"
    assert f"7.00  beyond the bill, {became}" in "\n".join(printed)
    totals = explain(b.ledger, invoice.invoice_id)["totals"]
    assert (Decimal(totals["credit_issued"]), Decimal(totals["credit_forfeited"])) == (issued, forfeited)
    said = " ".join(totals["derivation"])
    assert ("credit forfeited 7.00" in said) == (overflow == "forfeit")
    assert ("billing credit issued 7.00" in said) == (overflow == "balance")


def test_R27_a_later_catalog_version_never_restates_what_an_earlier_credit_became(book, db_url, tmp_path):
    """Kept as billing credit under version 1; read by a process that loads version 2, which
    forfeits. Before, the read models took today's policy: the invoice said 7.00 forfeited and
    the journal's receivable 7.00 owed, while the customer held the 7.00 credit."""
    template = WITH_FREE.format(timing="immediate_credit").replace('overage = "bill"', 'overage = "bill"\n{overflow}')
    first, later = tmp_path / "v1.toml", tmp_path / "v2.toml"
    first.write_text(template.replace("{overflow}", 'credit_overflow = "balance"'))
    later.write_text(template.replace("{overflow}", 'credit_overflow = "forfeit"').replace('version = "1"',
                                                                                          'version = "2"'))
    b = book(str(first), "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="basic", tier=10_000).ok
    b.at("2026-04-10T00:00:00")
    assert b.do("ws", "change-plan", plan="nada").ok
    reader = book(str(later), "2026-04-10T00:00:00")
    with Projections(eventsourcing_env(db_url), source=reader.ledger) as p:
        p.catch_up()
        with p.engine.connect() as conn:
            shown = invoices_of(conn, "ws")[-1]
            books = trial_balance(conn)
    assert (Decimal(shown["credit_issued"]), Decimal(shown["credit_forfeited"])) == (Decimal("7.00"), Decimal(0))
    assert books.get("billing_credit") == Decimal("-7.00") and not books.get("receivable")
