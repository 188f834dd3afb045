"""A shared test clock moved while commands run: `subledger serve --workers 2` on PostgreSQL with
$SUBLEDGER_TEST_CLOCK, an operator advancing the clock ten days at a time over HTTP while three
clients change their workspaces' seats and members through both workers. Every answer is a
recorded command or a typed refusal that records nothing (409 `clock_conflict` when another
worker moved the clock under the command); each workspace renews exactly once a month; no
command's fact is stamped before a fact already recorded; the event chain and the audit trail
verify."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from adapters.app import build_ledger
from domain.ledger import TestClock
from domain.subscription import Subscription
from tests.serve_process import Server, cli, make_tokens, subscribe_over_http

pytestmark = pytest.mark.postgres

START = "2026-01-01T00:00:00Z"
STEPS = [f"2026-{m:02d}-{d:02d}T12:00:00Z" for m in range(1, 7) for d in (1, 11, 21)][1:]
"""Every ten days, from 11 January to 21 June: five month boundaries crossed, five renewals."""
WORKSPACES = ("ta", "tb", "tc")
REFUSALS = {"clock_conflict", "concurrency_conflict"}


@pytest.fixture
def served(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, dict[str, str]]]:
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", START)
    tokens = make_tokens(pg_url, {"operator": ("operator", None), **{ws: ("admin", ws) for ws in WORKSPACES}})
    server = Server(pg_url, tmp_path / "serve.log", "--workers", "2")
    server.start()
    try:
        subscribe_over_http(server, {ws: tokens[ws] for ws in WORKSPACES})
        yield server, tokens
    finally:
        server.stop()


def test_a_test_clock_advanced_while_two_workers_take_commands_keeps_every_workspace_whole(
        served: tuple[Server, dict[str, str]], pg_url: str) -> None:
    server, tokens = served
    done = threading.Event()
    answers: Counter[str] = Counter()
    unexpected: list[str] = []
    lock = threading.Lock()

    def client(ws: str) -> None:
        auth = {"Authorization": f"Bearer {tokens[ws]}", "Connection": "close"}  # each request to either worker
        try:
            with httpx.Client(base_url=server.base, timeout=60) as http:
                i, held = 0, {"set-seats": ("seats", 3), "set-members": ("members", 0)}
                while not done.is_set() or i < 6:
                    name = "set-members" if i % 2 else "set-seats"
                    field, current = held[name]
                    value = 7 - current if name == "set-seats" else current % 3 + 1  # never what it is (refused)
                    r = http.post(f"/v1/workspaces/{ws}/{name}", json={field: value}, headers=auth)
                    code = "ok" if r.status_code == 200 else r.json().get("code", str(r.status_code))
                    if r.status_code == 200:
                        held[name] = (field, value)
                    with lock:
                        answers[code] += 1
                        if r.status_code != 200 and not (r.status_code == 409 and code in REFUSALS):
                            unexpected.append(f"{ws} {name} {r.status_code} {r.text[:300]}")
                    i += 1
        except Exception as e:  # noqa: BLE001 (a client that dies fails the test, below)
            with lock:
                unexpected.append(f"{ws}: {type(e).__name__}: {e}")

    clients = [threading.Thread(target=client, args=(ws,)) for ws in WORKSPACES]
    for t in clients:
        t.start()
    try:
        with httpx.Client(base_url=server.base, timeout=120) as http:
            operator = {"Authorization": f"Bearer {tokens['operator']}", "Connection": "close"}
            for step in STEPS:
                r = http.post("/v1/test-clock/advance", json={"to": step}, headers=operator)
                assert r.status_code == 200, r.text
    finally:
        done.set()
        for t in clients:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in clients), "a client did not finish within 120 s"
    assert not unexpected, unexpected[:5]
    assert answers["ok"] >= 3 * 6, answers

    ledger = build_ledger(pg_url, catalog="workspace", clock=TestClock(datetime(2026, 6, 21, 12, tzinfo=timezone.utc)))
    try:
        for ws in WORKSPACES:
            events = ledger.workspace_events(ws)
            renewals = [e for e in events if isinstance(e, Subscription.InvoiceIssued) and e.purpose == "renewal"]
            assert len(renewals) == 5, (ws, [(e.invoice_id, e.timestamp) for e in renewals])
            assert len({e.invoice_id for e in renewals}) == len(renewals)
            last = None
            for e in events:  # a scheduler fact is stamped when it fell due; a command's never goes back
                if e.actor_role != "system" and last is not None:
                    assert e.timestamp >= last, (ws, e.originator_version, e.timestamp, last)
                last = e.timestamp if last is None else max(last, e.timestamp)
    finally:
        ledger.close()
    verified = cli(pg_url, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
