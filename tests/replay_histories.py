"""Random recorded histories for the replay tests: workspaces that start paid with a good
card, then a random walk of commands (refusals, declined cards and 3-D Secure waits, confirmed
or abandoned, included) and waits."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from domain.errors import LedgerError
from tests.conftest import Book

CARDS = st.sampled_from(["pm_card_visa", "pm_card_visa", "pm_card_chargeDeclined", "pm_card_authenticationRequired"])
PLANS = {"forms": ["free", "pro", "team"], "workspace": ["free", "team", "business"],
         "operations": ["core", "pro", "teams"]}
WORKSPACES = ("w1", "w2")


def _args(**fields: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not None})


def commands(catalog: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    interval = st.sampled_from(["month", "year"])
    common = [
        st.tuples(st.just("add-payment-method"), _args(payment_method=CARDS)),
        st.tuples(st.sampled_from(["cancel-change", "cancel", "pay-invoice"]), st.just({})),
        st.tuples(st.just("set-members"), _args(members=st.integers(0, 6))),
    ]
    if catalog == "operations":
        tier = st.sampled_from([10_000, 40_000, 150_000])
        return st.one_of(*common,
                         st.tuples(st.just("change-plan"), _args(plan=st.sampled_from(PLANS[catalog]), tier=tier,
                                                                 interval=st.just("month"), keep_team=st.just("t1"))),
                         st.tuples(st.just("record-usage"), _args(operations=st.integers(1, 60_000))),
                         st.tuples(st.just("buy-operations"), st.just({"operations": 10_000})))
    plan = st.sampled_from(PLANS[catalog])
    out = [*common, st.tuples(st.just("change-plan"), _args(plan=plan, interval=st.one_of(st.none(), interval)))]
    if catalog == "workspace":
        out += [st.tuples(st.just("set-seats"), _args(seats=st.integers(1, 8))),
                st.tuples(st.just("set-storage-addon"), _args(addon=st.sampled_from([None, "storage-100gb"]))),
                st.tuples(st.just("buy-ai-credits"), st.just({"pack": "ai-1000"}))]
    return st.one_of(*out)


def opening(catalog: str, ws: str) -> st.SearchStrategy[list[Any]]:
    interval = st.sampled_from(["month", "year"])
    if catalog == "operations":
        sub = _args(plan=st.sampled_from(["core", "pro"]), tier=st.just(10_000), interval=st.just("month"))
    elif catalog == "workspace":
        sub = _args(plan=st.sampled_from(["team", "business"]), interval=interval, seats=st.integers(1, 5))
    else:
        sub = _args(plan=st.sampled_from(["pro", "team"]), interval=interval)
    return sub.map(lambda args: [("do", ws, ("add-payment-method", {"payment_method": "pm_card_visa"})),
                                 ("do", ws, ("subscribe", args))])


def scripts(catalog: str, max_steps: int = 12) -> st.SearchStrategy[list[Any]]:
    step = st.one_of(
        st.tuples(st.just("wait"), st.integers(1, 50)),
        st.tuples(st.just("do"), st.sampled_from(WORKSPACES), commands(catalog)),
        st.tuples(st.just("do"), st.sampled_from(WORKSPACES), commands(catalog)),
        st.tuples(st.just("customer"), st.sampled_from(WORKSPACES), st.booleans()),
    )
    return st.tuples(opening(catalog, "w1"), opening(catalog, "w2"), st.lists(step, min_size=2, max_size=max_steps)).map(
        lambda parts: parts[0] + parts[1] + parts[2])


def play(b: Book, script: list[Any]) -> None:
    for step in script:
        if step[0] == "wait":
            b.at((b.clock.now() + timedelta(days=step[1])).isoformat().replace("+00:00", ""))
            continue
        if step[0] == "customer":  # completes (or gives up) 3-D Secure on what waits for them
            _, ws, completes = step
            sub = b.sub(ws)
            waiting = [p["charge_key"] for p in (sub.pending_charges.values() if sub else []) if p["action_required"]]
            for key in waiting if completes else []:
                b.payments.confirm(key)
            if waiting:
                (b.ledger.resolve_payments if completes else b.ledger.abandon_payment)(ws)
            continue
        _, ws, (name, args) = step
        try:
            b.do(ws, name, **args)
        except LedgerError:
            pass  # arguments this catalog refuses before deciding


@contextmanager
def recorded(catalog: str, script: list[Any], start: str = "2026-01-31T00:00:00") -> Iterator[Book]:
    """A fresh SQLite ledger on a test clock with `script` recorded in it."""
    with tempfile.TemporaryDirectory() as tmp:
        b = Book(f"sqlite:///{tmp}/h.db", catalog, start)
        try:
            play(b, script)
            yield b
        finally:
            b.close()
