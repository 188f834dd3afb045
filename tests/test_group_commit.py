"""Group commit (domain/group_commit.py): commands handled at once by threads of one process
share transactions, and each keeps its atomicity and idempotency; a conflict fails only its own
save. Not timed: the batching is forced by holding the first commit until the others queue."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from adapters.app import catch_up, read_models
from domain.commands import parse_command
from domain.ledger import Result
from projections.plan_state import read_plan_state
from tests.conftest import ADMIN, Book

WORKSPACES = ["w0", "w1", "w2", "w3"]


@pytest.fixture
def book(db_url: str) -> Iterator[Book]:
    b = Book(db_url, "workspace", "2026-01-01T00:00:00")
    for ws in WORKSPACES:
        assert b.do(ws, "add-payment-method", payment_method="pm_card_visa").ok
        assert b.do(ws, "subscribe", plan="team", interval="month", seats=2).ok
    yield b
    b.ledger.close()


def held_first_commit(book: Book) -> tuple[threading.Event, Callable[[], int]]:
    """Hold the next commit until released; returns the release and the count of queued saves."""
    ledger, release, record = book.ledger, threading.Event(), book.ledger._record
    held = [True]

    def gated(processing_event: Any) -> Any:
        if held[0]:
            held[0] = False
            assert release.wait(30)
        return record(processing_event)

    ledger._record = gated  # type: ignore[method-assign]
    assert ledger.committer is not None
    return release, lambda: len(ledger.committer._queue)


def run(*work: Callable[[], Any]) -> list[Any]:
    out: list[Any] = [None] * len(work)

    def call(i: int) -> None:
        try:
            out[i] = work[i]()
        except Exception as e:  # noqa: BLE001 (the outcome asserted)
            out[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(work))]
    threads[0].start()
    for t in threads[1:]:
        time.sleep(0.05)
        t.start()
    for t in threads:
        t.join(60)
    return out


def members(book: Book, ws: str, n: int) -> Callable[[], Result]:
    return lambda: book.do(ws, "set-members", members=n)


def wait_queued(queued: Callable[[], int], n: int) -> None:
    deadline = time.monotonic() + 30
    while queued() < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_saves_queued_behind_a_commit_share_one_transaction_and_each_is_acknowledged(book: Book) -> None:
    release, queued = held_first_commit(book)
    before = book.ledger.committer.transactions  # type: ignore[union-attr]
    releaser = threading.Thread(target=lambda: (wait_queued(queued, 3), release.set()))
    releaser.start()
    results = run(members(book, "w0", 1), members(book, "w1", 2), members(book, "w2", 3), members(book, "w3", 4))
    releaser.join()
    assert [r.ok for r in results] == [True] * 4
    assert book.ledger.committer.transactions == before + 1  # type: ignore[union-attr]
    ids = [n.id for r in results[1:] for n in book.ledger.recorder.select_notifications(1, 1000)
           if n.originator_version == r.subscription.version and str(n.originator_id) == str(r.subscription.id)]
    assert len(ids) == 3 and max(ids) - min(ids) == 2  # one transaction: consecutive notification ids
    assert [book.ledger.get(ws).members for ws in WORKSPACES] == [1, 2, 3, 4]


def test_a_conflicting_save_in_a_shared_transaction_fails_alone_and_the_others_commit(book: Book) -> None:
    stale = book.ledger.get("w3")
    assert book.do("w3", "set-members", members=7).ok  # the stale copy is now one version behind
    ctx = book.ledger._context(stale, ADMIN, "api", "set-members", None, None, None, "stale")
    stale.record(stale.decide(parse_command("set-members", {"members": 9}), ctx), ctx)
    pending = list(stale.pending_events)
    release, queued = held_first_commit(book)
    releaser = threading.Thread(target=lambda: (wait_queued(queued, 3), release.set()))
    releaser.start()
    results = run(members(book, "w0", 1), members(book, "w1", 2), members(book, "w2", 3),
                  lambda: book.ledger._save(stale, pending))
    releaser.join()
    assert [getattr(r, "ok", r) for r in results[:3]] == [True] * 3
    assert isinstance(results[3], IntegrityError)
    assert [book.ledger.get(ws).members for ws in WORKSPACES] == [1, 2, 3, 7]
    assert not [e for e in book.ledger.workspace_events("w3") if getattr(e, "command_id", None) == "stale"]


def test_many_threads_keep_each_commands_events_together_and_replays_return_the_first_command_id(
        book: Book) -> None:
    """8 threads, 4 workspaces (conflicting), each purchase key sent by two threads."""
    results: list[tuple[str, str | None, Result]] = []
    lock = threading.Lock()

    def client(t: int) -> None:
        for j in range(6):
            ws = WORKSPACES[(t + j) % 4]
            if j % 2:
                key = f"buy-{ws}-{(t // 2 + j) % 3}"
                r = book.do(ws, "buy-ai-credits", key=key, pack="ai-1000")
            else:
                key, r = None, book.do(ws, "set-members", members=t + j)
            with lock:
                results.append((ws, key, r))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 48
    conflicts = [r for _, _, r in results if not r.ok]
    assert all(r.error.code == "concurrency_conflict" and not r.events for r in conflicts)
    ledger = book.ledger
    by_key: dict[tuple[str, str], set[str]] = {}
    for ws, key, r in results:
        if not r.ok:
            continue
        recorded = ledger.command_events(ws, r.command_id)
        assert [e.originator_version for e in recorded] == [e.originator_version for e in r.events]
        versions = [e.originator_version for e in recorded]
        if not r.replayed:  # all of a command's facts, consecutive: nothing of another command between
            assert versions == list(range(versions[0], versions[0] + len(versions)))
        if key:
            by_key.setdefault((ws, key), set()).add(r.command_id)
    assert all(len(ids) == 1 for ids in by_key.values())
    requests = Counter((ws, e.idempotency_key) for ws in WORKSPACES for e in ledger.workspace_events(ws)
                       if type(e).__name__ == "ChargeRequested" and e.idempotency_key)
    assert requests == Counter(set(by_key))  # each key charged once, by its one command
    catch_up(ledger)
    with read_models(ledger) as projections, projections.engine.connect() as conn:
        for ws in WORKSPACES:
            sub = ledger.get(ws)
            state = read_plan_state(conn, ws)
            assert state is not None
            assert (state["members"], state["ai_credits_purchased"]) == (sub.members, sub.ai_purchased)
