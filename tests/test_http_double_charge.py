"""Money moves exactly once over HTTP: four client processes send charging commands with
Idempotency-Keys to a real `subledger serve --workers 2` on PostgreSQL, charging through
localstripe, and retry the same key whenever the answer is unknown. In the second test the
server is SIGKILLed mid-run, one worker and then the whole of it, and restarted; `subledger
payments resolve` then records what Stripe did. Stripe's succeeded PaymentIntents must sum to
the ledger's recorded payments, one per invoice, and `subledger stripe reconcile` must agree.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.app import build_ledger
from adapters.stripe_gateway import StripeGateway, charge_id_of, customers_table
from domain.subscription import Subscription
from tests.payment_checks import key_problems, money_problems, pending_count, stripe_rows
from tests.serve_process import ROOT, Server, cli, make_tokens, subscribe_over_http
from tests.stripe_fixtures import API_KEY, LocalStripe, localstripe, stripe_env  # noqa: F401

pytestmark = pytest.mark.postgres

WORKSPACES = ("da", "db", "dc")
CLIENTS = 4
COMMANDS = 10
KILL_SEED = int(os.environ.get("HTTP_KILL_SEED", "4242"))


@pytest.fixture
def served(stripe_env: LocalStripe, pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:  # noqa: F811
    """The server on a fresh schema, and an admin token per workspace, each workspace on team
    with 3 seats and a good card (set up over HTTP, so through Stripe)."""
    tokens = make_tokens(pg_url, {ws: ("admin", ws) for ws in WORKSPACES})
    server = Server(pg_url, tmp_path / "serve.log", "--workers", "2")
    server.start()
    try:
        subscribe_over_http(server, tokens)
        yield server, tokens
    finally:
        server.stop()


def start_clients(server: Server, tokens: dict[str, str], progress: Path) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-m", "tests.http_charge_client", server.base, json.dumps(tokens),
                              "--index", str(i), "--count", str(COMMANDS), "--progress", str(progress)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(CLIENTS)]


def progress(folder: Path) -> int:
    return sum(int(p.read_text() or 0) for p in folder.glob("progress-*"))


def wait_for_progress(folder: Path, at_least: int, clients: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while progress(folder) < at_least and any(c.poll() is None for c in clients):
        assert time.monotonic() < deadline, f"the clients finished only {progress(folder)} commands in 120 s"
        time.sleep(0.05)


def finished(clients: list[subprocess.Popen[str]]) -> dict[str, Any]:
    """Every client's answers; one key must always be answered with one command id."""
    seen: dict[str, int] = defaultdict(int)
    commands: dict[str, set[str]] = defaultdict(set)
    for client in clients:
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, f"client {client.args} exited {client.returncode}:\n{err}"
        report = json.loads(out.strip().splitlines()[-1])
        for answer, n in report["seen"].items():
            seen[answer] += n
        for key, command_id in report["commands"].items():
            commands[key].add(command_id)
    assert {k: ids for k, ids in commands.items() if len(ids) > 1} == {}
    return dict(seen)


def assert_money_moved_once(pg_url: str, localstripe: LocalStripe, run: str = "") -> None:  # noqa: F811
    """Stripe's succeeded PaymentIntents of this ledger's customers against the ledger's facts."""
    gateway = StripeGateway(pg_url, API_KEY, localstripe.url)
    ledger = build_ledger(pg_url, catalog="workspace", payments=gateway)
    try:
        customers = gateway.tables.run(lambda conn: list(conn.execute(
            select(customers_table.c.customer_id)).scalars()))
        intents = list(gateway.payment_intents(customers))  # localstripe: all listed, then filtered
        succeeded = [pi for pi in intents if pi["status"] == "succeeded"]
        per_invoice: dict[tuple[str, str], list[str]] = defaultdict(list)
        for pi in succeeded:
            per_invoice[pi["metadata"]["workspace"], pi["metadata"]["invoice_id"]].append(pi["id"])
        assert {k: ids for k, ids in per_invoice.items() if len(ids) > 1} == {}, run
        paid = {ws: [e for e in ledger.workspace_events(ws) if isinstance(e, Subscription.PaymentSucceeded)]
                for ws in WORKSPACES}
        recorded = sum((e.amount for events in paid.values() for e in events), Decimal(0))
        rows = stripe_rows(intents)
        assert sum((r["amount"] for r in rows if r["outcome"] == "succeeded"), Decimal(0)) == recorded, run
        by_id = {pi["id"]: pi for pi in intents}
        for ws, payments in paid.items():
            submitted = {e.invoice_id: e.provider_reference for e in ledger.workspace_events(ws)
                         if isinstance(e, Subscription.ChargeSubmitted)}
            for e in payments:
                reference = submitted.get(e.invoice_id)
                assert reference in by_id and by_id[reference]["status"] == "succeeded", (run, e.invoice_id)
                assert charge_id_of(by_id[reference]) == e.charge_id, (run, e.invoice_id)
        assert money_problems(ledger, rows) == [], run
        assert key_problems(ledger) == [], run
        assert pending_count(ledger) == 0, run
        assert sum(map(len, paid.values())) > len(WORKSPACES), run
    finally:
        ledger.close()
        gateway.close()
    reconciled = cli(pg_url, "stripe", "reconcile", "--json")
    assert reconciled.returncode == 0, (run, reconciled.stdout, reconciled.stderr)


def test_four_http_clients_charging_the_same_workspaces_are_charged_once_at_stripe(
        served: tuple[Server, dict[str, str]], pg_url: str, stripe_env: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    server, tokens = served
    seen = finished(start_clients(server, tokens, tmp_path))
    assert seen.get("200 ok", 0) > 0 and not any(a.startswith(("5", "retried 5")) for a in seen), seen
    server.stop()
    assert_money_moved_once(pg_url, stripe_env, f"answers {seen}")


def test_a_server_killed_mid_run_and_restarted_still_charges_once_after_payments_resolve(
        served: tuple[Server, dict[str, str]], pg_url: str, stripe_env: LocalStripe, tmp_path: Path) -> None:  # noqa: F811
    rng = random.Random(KILL_SEED)
    server, tokens = served
    clients = start_clients(server, tokens, tmp_path)
    total = CLIENTS * COMMANDS
    wait_for_progress(tmp_path, rng.randint(total // 8, total // 4), clients)
    assert any(c.poll() is None for c in clients), "the clients finished before the first kill"
    os.kill(rng.choice(server.workers()), signal.SIGKILL)  # uvicorn's supervisor starts another
    wait_for_progress(tmp_path, rng.randint(total // 3, total // 2), clients)
    assert any(c.poll() is None for c in clients), "the clients finished before the server was killed"
    server.kill()
    time.sleep(rng.uniform(0.2, 1.5))
    server.start()  # the clients have been retrying their keys meanwhile
    seen = finished(clients)
    server.stop()
    resolved = cli(pg_url, "payments", "resolve", "--json")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert_money_moved_once(pg_url, stripe_env, f"kill seed {KILL_SEED}, answers {seen}")
