"""Bounded state: the aggregate keeps what decisions need, not its history, and old snapshots are
pruned; what left the aggregate is still explained, shown as of then, and verified from events."""

from __future__ import annotations

from typing import Any

from domain.subscription import Subscription
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
