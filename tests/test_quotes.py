"""Quotes in the domain (domain/quotes.py): Ledger.handle with a pin commits exactly the
previewed lines, and checks the pin inside its decide/save loop, so a writer that comes
between the check and the save makes the quote stale (R25)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain.commands import parse_command
from domain.quotes import Pin, invoice_terms
from tests.conftest import ADMIN


def pin_of(b: Any, command: str, **args: Any) -> Pin:
    preview = b.preview("ws", command, **args)
    return Pin(preview.version, b.ledger.catalog_for(preview.subscription).content_hash, invoice_terms(preview.events))


def on_pro(b: Any) -> Any:
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    b.do("ws", "subscribe", plan="pro")
    return b.at("2026-04-11T00:00:00")


def test_R25_a_pinned_change_records_the_previewed_lines(book: Any) -> None:
    b = on_pro(book())
    pin = pin_of(b, "change-plan", plan="team")
    result = b.ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN, pin=pin)
    assert result.ok and result.invoices()[0].amount_due == 20
    assert invoice_terms(result.events) == pin.terms


def test_R25_a_quoted_subscription_commits_seconds_later(book: Any) -> None:
    """A new cycle's period runs from the commit: the quote holds while the amounts do."""
    b = book()
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    pin = pin_of(b, "subscribe", plan="pro")
    b.clock.move_to(b.clock.now() + timedelta(seconds=5))
    result = b.ledger.handle("ws", parse_command("subscribe", {"plan": "pro"}), ADMIN, pin=pin)
    assert result.ok and result.invoices()[0].amount_due == 19


def test_R25_a_quoted_change_to_yearly_commits_seconds_later(book: Any) -> None:
    b = on_pro(book())
    pin = pin_of(b, "change-plan", plan="pro", interval="year")
    b.clock.move_to(b.clock.now() + timedelta(seconds=5))
    result = b.ledger.handle("ws", parse_command("change-plan", {"plan": "pro", "interval": "year"}), ADMIN, pin=pin)
    assert result.ok and invoice_terms(result.events) == pin.terms


def test_R25_a_quoted_change_is_stale_once_the_proration_moved(book: Any) -> None:
    b = on_pro(book())
    pin = pin_of(b, "change-plan", plan="team")
    b.clock.move_to(b.clock.now() + timedelta(days=1))
    result = b.ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN, pin=pin)
    assert result.error is not None and result.error.code == "quote_stale"
    assert b.sub("ws").plan == "pro"


def test_R25_a_writer_between_the_pin_check_and_the_save_makes_the_quote_stale(book: Any) -> None:
    b = on_pro(book())
    pin = pin_of(b, "change-plan", plan="team")
    other = book(start="2026-04-11T00:00:00")
    save = b.ledger._save
    raced = []

    def save_after_another_writer(sub: Any, events: list[Any], **kwargs: Any) -> None:
        if not raced:
            raced.append(other.do("ws", "set-members", members=3))
        save(sub, events, **kwargs)

    b.ledger._save = save_after_another_writer
    head = b.ledger.recorder.max_notification_id()
    result = b.ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN, pin=pin)
    assert raced and raced[0].ok
    assert result.error is not None and result.error.code == "quote_stale"
    assert b.ledger.recorder.max_notification_id() == head + 1  # only the other writer's event
    assert b.sub("ws").plan == "pro"
