"""Bounded state: the aggregate keeps what decisions need, not its history, and old snapshots are
pruned; what left the aggregate is still explained, shown as of then, and verified from events."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from adapters.settings import eventsourcing_env
from domain.subscription import Subscription
from projections.store import sqlalchemy_url
from replay.as_of import as_of, document
from replay.explain import explain
from replay.verify import snapshots
from tests.support import DECLINED, workspace_on


def buy_packs(b: Any, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        result = b.do("ws", "buy-ai-credits", pack="ai-1000")
        assert result.ok, result.error
        ids += [e.invoice_id for e in result.invoices()]
    return ids


def snapshot_versions(b: Any) -> list[int]:
    return [s.originator_version for s in b.ledger.snapshots.get(b.sub("ws").id)]


def test_paid_invoices_leave_the_aggregate_so_its_state_does_not_grow_with_paid_history(book: Any) -> None:
    b = workspace_on(book)
    paid = buy_packs(b, 6)
    assert len(paid) == 6
    assert b.sub("ws").invoices == {}
    b.at("2026-05-01T00:00:00")  # the renewal is charged and paid
    assert b.sub("ws").invoices == {}


def test_an_unpaid_invoice_stays_in_the_aggregate_until_it_is_paid(book: Any) -> None:
    b = workspace_on(book)
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    b.at("2026-05-01T00:00:00")  # the renewal is declined: open, dunning starts
    sub = b.sub("ws")
    assert list(sub.invoices) == sub.open_invoices() and len(sub.invoices) == 1
    assert sub.invoices[sub.open_invoice]["status"] == "open"


def test_snapshots_are_pruned_to_the_last_three_and_the_kept_ones_match_the_events(book: Any) -> None:
    b = workspace_on(book)
    for n in range(1, 170):
        b.do("ws", "set-members", members=n % 4 + 1)
    versions = snapshot_versions(b)
    head = b.sub("ws").version
    assert len(versions) == 3 and versions[-1] == head - head % 50 and head >= 150
    assert snapshots(b.ledger, {}, "ws")["ok"]


def test_a_fresh_process_loads_the_latest_snapshot_as_taken(book: Any, db_url: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Each kept snapshot's digest is recorded with it: a load finds them equal and uses it."""
    b = workspace_on(book)
    for n in range(1, 120):
        b.do("ws", "set-members", members=n % 4 + 1)
    expected = b.sub("ws").__dict__
    fresh = book("workspace", "2026-04-02T00:00:00")
    with caplog.at_level("WARNING", logger="adapters.snapshots"):
        assert fresh.sub("ws").__dict__ == expected
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_old_paid_invoices_are_still_explained_and_shown_as_of_then(book: Any) -> None:
    b = workspace_on(book)
    first = buy_packs(b, 1)[0]
    for n in range(1, 60):
        b.do("ws", "set-members", members=n % 4 + 1)
    doc = explain(b.ledger, first)
    assert doc["invoice_id"] == first and doc["lines"][0]["kind"] == "ai_credit_pack"
    invoices = document(b.ledger, as_of(b.ledger, "ws"))["invoices"]
    assert [i["status"] for i in invoices] == ["paid"] * len(invoices) and first in [i["invoice_id"] for i in invoices]


def test_a_snapshot_taken_before_state_was_bounded_still_loads_without_its_paid_invoices() -> None:
    state = {"invoices": {"in_1": {"amount_due": 1, "status": "paid", "attempts": 1},
                          "in_2": {"amount_due": 2, "status": "open", "attempts": 0}}}
    Subscription.upcast_v3_v4(state)
    assert list(state["invoices"]) == ["in_2"]


def test_a_key_replays_for_thirty_days_then_its_reuse_is_a_new_command(book: Any) -> None:
    b = workspace_on(book)
    first = b.do("ws", "set-members", key="members-1", members=2)
    b.at("2026-04-30T00:00:00")
    assert b.do("ws", "set-members", key="members-1", members=2).replayed
    assert b.do("ws", "set-members", key="members-1", members=3).error.code == "idempotency_conflict"
    b.at("2026-05-02T00:00:00")
    again = b.do("ws", "set-members", key="members-1", members=3)
    assert again.ok and not again.replayed
    assert again.command_id != first.command_id and b.sub("ws").members == 3
    assert b.do("ws", "set-members", key="members-1", members=3).replayed  # the new use is remembered


def test_the_key_map_holds_a_month_of_keys_however_long_the_history(book: Any) -> None:
    """The workspace state (and its snapshots) holds the keys of the last 30 days only; a ledger
    that loads it from the store (snapshots and events) holds the same ones."""
    b = workspace_on(book)
    for day in range(1, 100):
        b.clock.move_to(b.clock.now() + timedelta(days=1))
        assert b.do("ws", "set-members", key=f"day-{day}", members=day % 4 + 1).ok
    kept = b.sub("ws").idempotency
    assert 29 <= len(kept) <= 31 and "day-99" in kept and "day-60" not in kept
    other = book("workspace", "2026-04-01T00:00:00")
    other.clock.move_to(b.clock.now())
    assert other.sub("ws").idempotency == kept
    assert not other.do("ws", "set-members", key="day-60", members=1).replayed
    assert other.do("ws", "set-members", key="day-99", members=99 % 4 + 1).replayed


def test_a_snapshot_from_before_keys_expired_keeps_its_keys_from_its_last_change() -> None:
    at = datetime(2026, 4, 1, tzinfo=timezone.utc)
    state = {"_modified_on": at, "idempotency": {"k": {"hash": "h", "first": 3, "last": 4, "command_id": None}}}
    Subscription.upcast_v4_v5(state)
    assert state["idempotency"]["k"]["at"] == at


@pytest.mark.parametrize("older", [
    "UPDATE subledger_meta SET value = 'subledger-4 eventsourcing-9.5.6' WHERE key = 'event_store'",
    "UPDATE subledger_meta SET value = 'subledger-5 eventsourcing-9.5.6' WHERE key = 'event_store'",  # no digests
    # a charge waiting in one does not count the operations reported while it waited:
    "UPDATE subledger_meta SET value = 'subledger-6 eventsourcing-9.5.6' WHERE key = 'event_store'",
    "DELETE FROM subledger_meta",  # a store set up before versions were recorded
])
def test_snapshots_from_before_keys_were_dated_are_discarded_at_the_upgrade(book: Any, db_url: str, older: str) -> None:
    """The upcaster can only guess when a key of an older snapshot was first used; the events know,
    so `audit verify` would flag the guess. The upgrade deletes those snapshots: loads replay the
    events, and the keys keep replaying."""
    b = workspace_on(book)
    assert b.do("ws", "set-members", key="k-1", members=2).ok
    b.at("2026-04-02T00:00:00")
    assert b.do("ws", "set-members", members=3).ok
    snap = Subscription.Snapshot.take(b.sub("ws"))
    state = copy.deepcopy(snap.state)
    state["class_version"] = 4
    for entry in state["idempotency"].values():
        del entry["at"]
    b.ledger.snapshots.put([dataclasses.replace(snap, state=state)])  # as the previous release stored it
    assert snapshots(b.ledger, {}, "ws")["problem"] == "snapshot_differs"
    with create_engine(sqlalchemy_url(eventsourcing_env(db_url))).begin() as conn:
        conn.execute(text(older))
    upgraded = book("workspace", "2026-04-02T00:00:00")  # set up again, under the set-up lock
    assert list(upgraded.ledger.snapshots.get(b.sub("ws").id)) == []
    assert snapshots(upgraded.ledger, {}, "ws")["ok"]
    assert upgraded.do("ws", "set-members", key="k-1", members=2).replayed
