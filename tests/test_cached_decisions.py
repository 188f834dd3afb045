"""Deciding on the cached workspace (domain/loading.py): two ledgers on one database stand for
two processes, each with its own aggregate cache. Whatever one records, the other's commands
and reads see; a stale copy never refuses, never double-records and never hides a key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from domain.subscription import workspace_uuid
from tests.conftest import Book
from tests.payment_checks import money_problems

VISA = "pm_card_visa"


@pytest.fixture
def pair(db_url: str) -> Iterator[tuple[Book, Book]]:
    """Two ledgers on one database; the first has workspace ws cached (Team, 2 seats)."""
    a, b = Book(db_url, "workspace", "2026-01-01T00:00:00"), Book(db_url, "workspace", "2026-01-01T00:00:00")
    assert a.do("ws", "add-payment-method", payment_method=VISA).ok
    assert a.do("ws", "subscribe", plan="team", interval="month", seats=2).ok
    yield a, b
    a.close()
    b.close()


def events_of(book: Book) -> list[str]:
    return [type(e).__name__ for e in book.ledger.workspace_events("ws")]


def test_a_command_refused_on_a_stale_copy_is_decided_again_on_what_the_store_holds(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert a.do("ws", "set-members", members=2).ok
    assert b.do("ws", "set-members", members=1).ok
    result = a.do("ws", "set-seats", seats=1)
    assert result.ok, result.error
    assert (a.sub("ws").seats, a.sub("ws").members) == (1, 1)


def test_a_command_accepted_on_a_stale_copy_is_recorded_after_the_other_writers_event(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert a.do("ws", "set-members", members=1).ok
    assert b.do("ws", "set-members", members=2).ok
    assert a.do("ws", "set-members", members=0).ok
    members = [e.members for e in a.ledger.workspace_events("ws") if type(e).__name__ == "MembersChanged"]
    assert members == [1, 2, 0]
    assert b.sub("ws").members == 0


def test_a_read_shows_what_another_process_recorded_since_the_workspace_was_cached(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert a.sub("ws").seats == 2
    assert b.do("ws", "set-seats", seats=3).ok
    assert a.sub("ws").seats == 3
    assert a.preview("ws", "set-members", members=3).ok


def test_an_idempotency_key_another_process_recorded_is_replayed_not_recorded_twice(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert a.do("ws", "set-members", members=1).ok
    first = b.do("ws", "set-members", key="k-1", members=2)
    assert first.ok
    recorded = events_of(a)
    again = a.do("ws", "set-members", key="k-1", members=2)
    assert again.replayed and again.command_id == first.command_id
    assert events_of(a) == recorded


def test_a_refusal_that_the_store_confirms_records_nothing(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert b.do("ws", "set-members", members=2).ok
    recorded = events_of(a)
    result = a.do("ws", "set-seats", seats=1)
    assert not result.ok and result.error.code == "seat_limit_exceeded"
    assert events_of(a) == recorded


def test_writers_taking_turns_on_stale_copies_keep_one_unbroken_chain(pair: tuple[Book, Book]) -> None:
    a, b = pair
    for i in range(6):
        assert (a if i % 2 else b).do("ws", "set-members", members=i % 3).ok
    recorder = a.ledger.recorder
    assert recorder.verify_chain(workspace_uuid("ws")).ok
    assert len(a.ledger.workspace_events("ws")) == len(b.ledger.workspace_events("ws"))


def test_a_save_that_committed_but_lost_its_answer_is_not_recorded_or_charged_twice(pair: tuple[Book, Book]) -> None:
    """The database committed, then the connection failed before saying so: the retry meets the
    command's own events (IntegrityError) and must take them as done, not decide it again."""
    a, _ = pair
    record, lost = a.ledger._record, [True]

    def committed_then_lost(processing_event: Any) -> Any:
        recordings = record(processing_event)
        if lost[0] and any(type(e).__name__ == "ChargeRequested" for e in processing_event.events):
            lost[0] = False
            raise IntegrityError("the connection dropped after the commit")
        return recordings

    a.ledger._record = committed_then_lost  # type: ignore[method-assign]
    result = a.do("ws", "buy-ai-credits", pack="ai-1000")
    assert result.ok, result.error
    assert not lost[0]
    requested = [e for e in a.ledger.workspace_events("ws") if type(e).__name__ == "ChargeRequested"]
    assert [e.command_id for e in requested].count(result.command_id) == 1
    assert len(a.payments.charges("ws")) == 2  # the subscription's first invoice, the credits
    assert money_problems(a.ledger, a.payments.charges()) == []


def test_a_replay_found_on_a_stale_copy_answers_the_workspace_as_the_store_holds_it(pair: tuple[Book, Book]) -> None:
    a, b = pair
    assert a.do("ws", "set-members", members=1).ok
    assert b.do("ws", "set-members", key="k-2", members=2).ok
    assert b.do("ws", "set-seats", seats=4).ok
    again = a.do("ws", "set-members", key="k-2", members=2)
    assert again.replayed and again.subscription.seats == 4


def test_a_fresh_load_after_a_cache_miss_still_reads_what_was_written_since(pair: tuple[Book, Book]) -> None:
    """Another thread may put an older copy in the cache between a miss and the library's load."""
    a, b = pair
    old = a.ledger.get("ws")
    assert b.do("ws", "set-members", members=3).ok
    a.ledger.forget(old)
    get = a.ledger.repository.get

    def older_copy_cached_meanwhile(*args: Any, **kwargs: Any) -> Any:
        a.ledger.remember(old)
        return get(*args, **kwargs)

    a.ledger.repository.get = older_copy_cached_meanwhile  # type: ignore[method-assign]
    assert a.ledger.get("ws").members == 3


def test_a_renewal_falling_due_during_a_command_never_changes_the_cached_workspace(
        pair: tuple[Book, Book], monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock passes the renewal while a command runs: the command is decided at the instant
    the ledger looked for what was due (before the renewal), the next one records the renewal
    first, and what an earlier command returned (the cached workspace) never changes."""
    a, _ = pair
    earlier = a.do("ws", "set-members", members=2).subscription
    before = (earlier.version, earlier.period_end, earlier.members)
    renewal = earlier.next_due_at()
    looks = iter([renewal - timedelta(microseconds=1)])
    monkeypatch.setattr(a.clock, "now", lambda: next(looks, renewal + timedelta(seconds=1)))
    during = a.do("ws", "set-members", members=3)
    assert during.ok and not during.due_events
    assert [e.timestamp for e in during.events] == [renewal - timedelta(microseconds=1)]
    after = a.do("ws", "set-members", members=4)
    assert "InvoiceIssued" in [type(e).__name__ for e in after.due_events]
    assert (earlier.version, earlier.period_end, earlier.members) == before
    assert a.sub("ws").period_end > before[1] and a.sub("ws").members == 4


def test_a_workspace_still_being_changed_is_never_in_the_cache(pair: tuple[Book, Book],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Catching up saves and changes one object, round after round: between a save and the next
    round no other thread may find that object in the cache, only a copy of it."""
    a, _ = pair
    found: list[bool] = []
    remember = a.ledger.remember

    def checked(sub: Any, *, done: bool = False) -> None:
        try:
            found.append(a.ledger.repository.cache.get(sub.id) is sub)
        except KeyError:
            found.append(False)
        remember(sub, done=done)

    monkeypatch.setattr(a.ledger, "remember", checked)
    a.at("2026-03-02T00:00:00")  # two renewals, each charged and paid: rounds of saves
    assert len(found) >= 4 and not any(found)


def test_a_paid_open_invoice_is_not_seen_paid_in_the_process_before_its_payment_is_saved(
        pair: tuple[Book, Book], monkeypatch: pytest.MonkeyPatch) -> None:
    """pay-invoice asks for money without a purchase of its own: while its outcome is recorded,
    another thread of the process reads the workspace as the store holds it (the charge pending),
    as another process does. Before, the cache held the very object being settled, and others
    read (and decided on) a payment not saved yet."""
    a, _ = pair
    assert a.do("ws", "add-payment-method", payment_method="pm_card_chargeDeclined").ok
    a.at("2026-02-01T01:00:00")
    [open_invoice] = a.sub("ws").open_invoices()
    assert a.do("ws", "add-payment-method", payment_method=VISA).ok
    seen: list[tuple[list[str], list[str]]] = []
    save = a.ledger._save

    def outcome_saved_after_a_read(sub: Any, events: list[Any], **kw: Any) -> None:
        if "PaymentSucceeded" in [type(e).__name__ for e in events]:
            other = a.ledger.get("ws")
            seen.append((list(other.pending_charges), other.open_invoices()))
        save(sub, events, **kw)

    monkeypatch.setattr(a.ledger, "_save", outcome_saved_after_a_read)
    assert a.do("ws", "pay-invoice").ok
    assert seen == [([open_invoice], [open_invoice])]
    assert a.sub("ws").open_invoices() == []
