"""The audit trail's summary (projections/audit_summary.py): every fact reads as a sentence a
finance or support person understands (R3), not as its type's name, and a collection's charge
says why it was asked for, not "for renewal" on an invoice that renews nothing."""

from __future__ import annotations

import inspect
from typing import Any

from domain.subscription import Subscription
from projections import audit_trail
from projections.audit_summary import summary
from projections.runner import Projections
from adapters.settings import eventsourcing_env
from tests.conftest import Book, SALES
from tests.support import catalog_variant

VISA = "pm_card_visa"


def trail(b: Book, db_url: str, ws: str = "ws") -> list[tuple[str, str]]:
    with Projections(eventsourcing_env(db_url), source=b.ledger) as p:
        p.catch_up()
        with p.engine.connect() as conn:
            return [(r["event_type"], r["summary"]) for r in audit_trail.rows(conn, ws)]


def test_R3_every_recorded_fact_has_a_sentence_of_its_own() -> None:
    bare = [name for name, cls in vars(Subscription).items()
            if inspect.isclass(cls) and issubclass(cls, Subscription.Event) and cls is not Subscription.Event
            and name != "Created" and summary.dispatch(cls) is summary.registry[object]]
    assert bare == []


def test_R3_R9_payment_methods_and_contracts_read_as_what_they_changed(book: Any, db_url: str) -> None:
    b = book("forms")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="pro", interval="month").ok
    assert b.do("ws", "add-payment-method", payment_method="pm_card_mastercard").ok
    assert b.do("ws", "remove-payment-method", payment_method="pm_card_mastercard").ok
    assert b.do("ws", "set-contract", actor=SALES, contract="enterprise").ok
    assert b.do("ws", "set-contract", actor=SALES, contract=None).ok
    rows = trail(b, db_url)
    assert ("PaymentMethodAdded", "payment method pm_card_visa added: the one charged from now on") in rows
    assert ("PaymentMethodRemoved", "payment method pm_card_mastercard removed; pm_card_visa is charged from now on"
            ) in rows
    assert ("ContractSet", "custom contract set (enterprise): plan, seat, interval and add-on changes go through "
            "sales (R9)") in rows
    assert ("ContractSet", "custom contract ended: self-serve changes are open again") in rows


def test_R19_a_final_invoices_charge_is_a_collection_not_a_renewal(book: Any, db_url: str, tmp_path: Any) -> None:
    b = book(catalog_variant(tmp_path, "operations", "operations-custom", overage='"bill"'), "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="core", tier=10_000, interval="month").ok
    assert b.do("ws", "record-usage", operations=11_000).ok
    assert b.do("ws", "cancel").ok
    b.at("2026-05-02T00:00:00")
    rows = trail(b, db_url)
    final = next(s for t, s in rows if t == "InvoiceIssued" and "(final)" in s)
    invoice = final.split()[1]
    asked = [s for t, s in rows if t == "ChargeRequested" and invoice in s]
    assert len(asked) == 1 and asked[0].startswith(f"charge of 1.06 requested to collect {invoice}, as it is issued")
    assert "renewal" not in asked[0]
    assert ("OperationsUsed", "11,000 operations used (10,000 of the allowance), 1,000 beyond the allowance") in rows
    assert ("CancellationScheduled", "cancellation scheduled for 2026-05-01T00:00:00Z, the end of the paid period"
            ) in rows
