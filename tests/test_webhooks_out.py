"""Outbound webhooks (adapters/webhooks*.py, docs/webhooks.md): each workspace event reaches
every endpoint that asked for it at least once, signed per Standard Webhooks, in order per
workspace; retried while the receiver is down, dead-lettered when it keeps failing and
delivered after `webhooks retry`; a killed dispatcher's successor sends the rest, repeats
carrying the same webhook-id.

The receiver is a threaded http.server on 127.0.0.1 verifying every request with the
`standardwebhooks` library the dispatcher signs with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from adapters.cli import app
from adapters.schema import prepare
from adapters.settings import eventsourcing_env
from adapters.webhooks import WebhookStore, message_id
from adapters.webhooks_dispatch import Dispatcher, RetryPolicy, dispatcher_lock
from tests.conftest import Book

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(max_attempts=1000, backoff=0.02, max_backoff=0.05, timeout=5.0)


class Receiver:
    """Endpoints on 127.0.0.1, one per path, each with its signing secret. Every request is
    verified; `answer(path, payload)` picks the status of a verified one."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.got: list[dict[str, Any]] = []
        self.bad = 0
        self.answer: Callable[[str, dict[str, Any]], int] = lambda path, payload: 200
        self.delay = 0.0
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                path = self.path.lstrip("/")
                try:
                    payload = Webhook(receiver.secrets[path]).verify(body, dict(self.headers))
                except (KeyError, WebhookVerificationError):
                    with receiver.lock:
                        receiver.bad += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                time.sleep(receiver.delay)
                status = receiver.answer(path, payload)
                with receiver.lock:
                    receiver.got.append({"path": path, "id": self.headers["webhook-id"], "payload": payload,
                                         "status": status})
                try:
                    self.send_response(status)
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (killed mid-request)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if g["path"] == path and 200 <= g["status"] < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI exports --db to $SUBLEDGER_DB: undo that after each test."""
    monkeypatch.setenv("SUBLEDGER_DB", "sqlite:///unused-placeholder.db")


def history(b: Book, workspaces: list[str]) -> None:
    for i, ws in enumerate(workspaces):
        b.do(ws, "add-payment-method", payment_method="pm_card_visa")
        b.do(ws, "subscribe", plan="pro", interval="month")
        b.do(ws, "set-members", members=i % 3 + 1)
        if i % 2 == 0:
            b.do(ws, "change-plan", plan="team")


def endpoint(db_url: str, receiver: Receiver, path: str, events: str = "*", workspace: str | None = None) -> str:
    env = prepare(eventsourcing_env(db_url))
    b_head = _head(env)
    with WebhookStore(env) as store:
        row = store.add(receiver.url(path), events, workspace, head=lambda: b_head)
    receiver.secrets[path] = row["secret"]
    return str(row["id"])


def _head(env: dict[str, str]) -> int:
    from domain.ledger import Ledger
    ledger = Ledger(env)
    try:
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def drain(db_url: str, policy: RetryPolicy = FAST, until: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Dispatch until nothing is pending (or `until()`), within a minute."""
    with Dispatcher(prepare(eventsourcing_env(db_url)), policy) as d:
        deadline = time.monotonic() + 60
        while True:
            status = d.run_once()
            if (until() if until else not status["messages"]["pending"]) or time.monotonic() > deadline:
                return status
            time.sleep(0.02)


def versions_by_workspace(got: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for g in got:
        out.setdefault(g["payload"]["workspace"], []).append(g["payload"]["version"])
    return out


def cli(db: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--db", db, *args])
    assert "Traceback" not in result.output, result.output
    return result


# ------------------------------------------------------------------ delivery


def test_every_workspace_event_is_delivered_signed_once_in_order_per_workspace(
        book: Callable[..., Book], db_url: str, receiver: Receiver) -> None:
    b = book()
    endpoint_id = endpoint(db_url, receiver, "all")
    history(b, ["acme", "globex", "initech"])
    status = drain(db_url)
    got = receiver.delivered("all")
    assert receiver.bad == 0 and status["messages"] == {"pending": 0, "delivered": len(got), "dead": 0}
    assert versions_by_workspace(got) == {ws: list(range(1, b.sub(ws).version + 1))
                                          for ws in ("acme", "globex", "initech")}
    assert [g["id"] for g in got] == [message_id(endpoint_id, g["payload"]["notification_id"]) for g in got]
    upgrade = next(g["payload"] for g in got if g["payload"]["type"] == "PlanUpgraded"
                   and g["payload"]["workspace"] == "acme")
    assert upgrade["actor"] == {"id": "alice", "role": "admin"}
    assert upgrade["channel"] and upgrade["command_id"] and upgrade["timestamp"].endswith("Z")
    assert upgrade["fields"]["plan"] == "team"
    assert drain(db_url)["this_run"]["delivered"] == 0  # delivered once: nothing is sent again
    with Dispatcher(prepare(eventsourcing_env(db_url)), FAST, keep_delivered=timedelta(0)) as d:
        assert d.run_once()["messages"] == {"pending": 0, "delivered": 0, "dead": 0}  # delivered ones pruned
    assert len(receiver.delivered("all")) == len(got)


def test_a_failing_workspace_waits_behind_its_failed_event_while_others_proceed(
        tmp_path: Path, receiver: Receiver) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        endpoint(db, receiver, "hook")
        history(b, ["acme", "globex"])
        healthy = {"acme": False}
        receiver.answer = lambda path, p: 200 if p["workspace"] != "acme" or healthy["acme"] else 503
        drain(db, until=lambda: len(receiver.delivered("hook")) >= b.sub("globex").version)
        tried_acme = {g["payload"]["version"] for g in receiver.got if g["payload"]["workspace"] == "acme"}
        assert tried_acme == {1}  # acme's later events wait behind its first
        globex = list(range(1, b.sub("globex").version + 1))
        assert versions_by_workspace(receiver.delivered("hook")) == {"globex": globex}
        healthy["acme"] = True
        drain(db)
        assert versions_by_workspace(receiver.delivered("hook"))["acme"] == list(range(1, b.sub("acme").version + 1))
    finally:
        b.close()


def test_a_slow_receiver_holds_up_its_own_queue_only(tmp_path: Path, receiver: Receiver) -> None:
    """A receiver that answers each message a second late: while its queue is being sent, an
    event of another workspace for another endpoint goes out (it used to wait for the round)."""
    db = f"sqlite:///{tmp_path}/slow.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    stop = threading.Event()
    try:
        endpoint(db, receiver, "slow", workspace="ws1")
        endpoint(db, receiver, "fast", workspace="ws2")
        for members in (1, 2, 3):
            b.do("ws1", "set-members", members=members)
        slow_total = b.sub("ws1").version
        receiver.answer = lambda path, payload: (time.sleep(1.0) if path == "slow" else None) or 200
        with Dispatcher(prepare(eventsourcing_env(db)), FAST) as d:
            running = threading.Thread(target=d.run, args=(stop, 0.05))
            running.start()
            try:
                deadline = time.monotonic() + 30
                while not receiver.delivered("slow") and time.monotonic() < deadline:
                    time.sleep(0.05)
                b.do("ws2", "add-payment-method", payment_method="pm_card_visa")
                while not receiver.delivered("fast") and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert receiver.delivered("fast"), "the other endpoint's event never went out"
                assert len(receiver.delivered("slow")) < slow_total, "it waited for the slow queue's whole turn"
            finally:
                stop.set()
                running.join()
    finally:
        b.close()


def test_a_receiver_down_then_up_gets_every_event_retried_nothing_lost(receiver: Receiver, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        endpoint(db, receiver, "hook")
        history(b, ["acme", "globex"])
        receiver.stop()
        status = drain(db, until=lambda: True)
        assert status["this_run"]["failed"] >= 2 and status["messages"]["delivered"] == 0
        receiver.start()  # the same port again
        status = drain(db)
        assert status["messages"] == {"pending": 0, "delivered": b.sub("acme").version + b.sub("globex").version,
                                      "dead": 0}
        assert versions_by_workspace(receiver.delivered("hook")) == {
            ws: list(range(1, b.sub(ws).version + 1)) for ws in ("acme", "globex")}
    finally:
        b.close()


def test_a_receiver_that_always_fails_gets_dead_letters_and_retry_delivers_them(
        receiver: Receiver, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    added = json.loads(cli(db, "webhooks", "add", receiver.url("hook"), "--events", "Subscribed,PlanUpgraded",
                           "--json").stdout)
    receiver.secrets["hook"] = added["secret"]
    assert cli(db, "add-payment-method", "acme", "--payment-method", "pm_card_visa").exit_code == 0
    assert cli(db, "subscribe", "acme", "--plan", "pro", "--interval", "month").exit_code == 0
    assert cli(db, "change-plan", "acme", "--plan", "team").exit_code == 0
    receiver.answer = lambda path, p: 500
    run = cli(db, "webhooks", "deliver", "--once", "--backoff", "0", "--max-attempts", "3", "--json")
    assert run.exit_code == 0 and json.loads(run.stdout)["messages"] == {"pending": 0, "delivered": 0, "dead": 2}
    dead = json.loads(cli(db, "webhooks", "dead", "--json").stdout)["dead"]
    assert [(d["event_type"], d["attempts"], d["last_status"]) for d in dead] == [
        ("Subscribed", 3, 500), ("PlanUpgraded", 3, 500)]
    assert len(receiver.got) == 6

    receiver.answer = lambda path, p: 200
    assert cli(db, "webhooks", "retry", dead[1]["msg_id"]).exit_code == 0
    run = cli(db, "webhooks", "deliver", "--once")
    assert "this run: 0 queued, 1 delivered, 0 failed, 0 dead" in run.stdout
    assert "messages: 0 pending, 1 delivered, 1 dead" in run.stdout
    delivered = [(g["id"], g["payload"]["type"]) for g in receiver.delivered("hook")]
    assert delivered == [(dead[1]["msg_id"], "PlanUpgraded")]
    assert cli(db, "webhooks", "retry", "msg_nope_1").exit_code == 1  # not_found


def test_a_killed_dispatcher_is_followed_by_one_that_delivers_the_rest_with_the_same_ids(
        receiver: Receiver, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        endpoint_id = endpoint(db, receiver, "hook")
        workspaces = ["acme", "globex", "initech", "umbrella"]
        history(b, workspaces)
        held, release = threading.Event(), threading.Event()

        def answer(path: str, payload: dict[str, Any]) -> int:
            if len(receiver.delivered(path)) >= 4:  # the fifth request is taken in, never answered in time
                held.set()
                release.wait(30)
            return 200

        receiver.answer = answer
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "--db", db, "webhooks", "deliver", "--loop", "--poll", "0.05",
             "--concurrency", "1"], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert held.wait(60), "the dispatcher sent nothing"
            dispatcher.send_signal(signal.SIGKILL)
        finally:
            dispatcher.wait(30)
            release.set()
        receiver.answer = lambda path, payload: 200
        restarted = cli(db, "webhooks", "deliver", "--once", "--lock-wait", "10", "--json")  # the lock died with it
        assert restarted.exit_code == 0 and json.loads(restarted.stdout)["messages"]["pending"] == 0
        expected = {ws: list(range(1, b.sub(ws).version + 1)) for ws in workspaces}
    finally:
        b.close()
    got = receiver.delivered("hook")
    ids: dict[int, set[str]] = {}
    for g in got:
        ids.setdefault(g["payload"]["notification_id"], set()).add(g["id"])
    assert all(found == {message_id(endpoint_id, nid)} for nid, found in ids.items())  # repeats keep their id
    assert len(got) > len(ids)  # the request in flight when the dispatcher died was sent again
    first_seen: dict[str, list[int]] = {}
    for g in got:
        versions = first_seen.setdefault(g["payload"]["workspace"], [])
        if g["payload"]["version"] not in versions:
            versions.append(g["payload"]["version"])
    assert first_seen == expected


def test_one_dispatcher_sends_at_a_time_a_second_one_waits_for_the_lock(db_url: str) -> None:
    env = prepare(eventsourcing_env(db_url))
    with dispatcher_lock(env, wait=0):
        result = cli(db_url, "webhooks", "deliver", "--once", "--lock-wait", "0.3")
    assert result.exit_code == 3 and "another webhook dispatcher" in result.stderr
    assert cli(db_url, "webhooks", "deliver", "--once", "--lock-wait", "0").exit_code == 0


# ------------------------------------------------------------------ filters and input


def test_an_endpoint_gets_only_its_event_types_and_workspace_and_only_events_after_it_was_added(
        receiver: Receiver, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    try:
        history(b, ["early"])
        endpoint(db, receiver, "upgrades", events="PlanUpgraded,Subscribed")
        endpoint(db, receiver, "acme", workspace="acme")
        removed = endpoint(db, receiver, "removed")
        with WebhookStore(prepare(eventsourcing_env(db))) as store:
            store.remove(removed)
        history(b, ["acme", "globex"])
        drain(db)
        acme_events = b.sub("acme").version
    finally:
        b.close()
    assert sorted((g["payload"]["workspace"], g["payload"]["type"]) for g in receiver.delivered("upgrades")) == [
        ("acme", "PlanUpgraded"), ("acme", "Subscribed"), ("globex", "Subscribed")]
    assert {g["payload"]["workspace"] for g in receiver.delivered("acme")} == {"acme"}
    assert len(receiver.delivered("acme")) == acme_events
    assert receiver.delivered("removed") == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "file:///etc/passwd", "http://", "not a url",
                                 "javascript:alert(1)", "http://user:pw@127.0.0.1/hook"])
def test_a_webhook_url_that_is_not_http_or_https_is_refused(url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    result = cli(db, "webhooks", "add", url, "--events", "*")
    assert result.exit_code == 2 and "invalid_request" in result.stderr
    assert json.loads(cli(db, "webhooks", "list", "--json").stdout)["endpoints"] == []


def test_an_unknown_event_type_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    result = cli(db, "webhooks", "add", "http://127.0.0.1:9/hook", "--events", "PlanUpgraded,PlanExploded")
    assert result.exit_code == 2 and "PlanExploded" in result.stderr


# ------------------------------------------------------------------ over HTTP


def test_only_an_operator_token_manages_webhook_endpoints_over_http(tmp_path: Path, receiver: Receiver) -> None:
    from fastapi.testclient import TestClient

    from adapters.http import webhooks_routes
    from adapters.http.app import create_app
    from adapters.tokens import TokenStore

    db = f"sqlite:///{tmp_path}/ledger.db"
    api = create_app(db)
    api.include_router(webhooks_routes.router)
    tokens = TokenStore(db)
    operator = {"Authorization": f"Bearer {tokens.create('operator')[1]}"}
    service = {"Authorization": f"Bearer {tokens.create('service')[1]}"}
    tokens.close()
    with TestClient(api) as client:
        assert client.get("/v1/webhooks", headers=service).status_code == 403
        assert client.get("/v1/webhooks").status_code == 401
        refused = client.post("/v1/webhooks", headers=operator, json={"url": "ftp://127.0.0.1/x", "events": ["*"]})
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
        added = client.post("/v1/webhooks", headers=operator,
                            json={"url": receiver.url("hook"), "events": ["Subscribed"]})
        assert added.status_code == 201 and added.json()["secret"].startswith("whsec_")
        listed = client.get("/v1/webhooks", headers=operator).json()["data"]
        assert [(e["id"], e["events"]) for e in listed] == [(added.json()["id"], ["Subscribed"])]
        assert "secret" not in listed[0]
        assert client.get("/v1/webhooks/dead", headers=operator).json() == {"object": "list", "data": [],
                                                                            "has_more": False}
        assert client.get("/v1/webhooks/dead?limit=1000", headers=operator).status_code == 400
        assert client.post("/v1/webhooks/dead/msg_x_1/retry", headers=operator).status_code == 404
        assert client.delete(f"/v1/webhooks/{added.json()['id']}", headers=operator).status_code == 204
        assert client.get("/v1/webhooks", headers=operator).json()["data"] == []
        keyed = {**operator, "Idempotency-Key": "hook-1"}
        body = {"url": receiver.url("hook"), "events": ["*"], "workspace": "ws1"}
        first, again = (client.post("/v1/webhooks", headers=keyed, json=body) for _ in range(2))
        assert again.json() == {**first.json(), "secret": None} and again.headers["Idempotent-Replayed"] == "true"
        assert len(client.get("/v1/webhooks", headers=operator).json()["data"]) == 1
        for wrong in ({**body, "workspace_id": "ws1"}, {**body, "workspace": "verify"}):
            refused = client.post("/v1/webhooks", headers=operator, json=wrong)
            assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    api.state.webhooks.close()


def test_a_queue_whose_turn_keeps_failing_is_tried_once_a_poll(tmp_path: Path, receiver: Receiver,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn that fails at once (the database refusing its select) must not spin the loop."""
    db = f"sqlite:///{tmp_path}/spin.db"
    b = Book(db, "forms", "2026-04-01T00:00:00")
    stop = threading.Event()
    turns: list[float] = []
    try:
        endpoint(db, receiver, "hook")
        b.do("ws", "set-members", members=1)

        def failing(self: Dispatcher, endpoint: Any, workspace: str) -> int:
            turns.append(time.monotonic())
            raise RuntimeError("statement timeout")

        monkeypatch.setattr(Dispatcher, "deliver_queue", failing)
        with Dispatcher(prepare(eventsourcing_env(db)), FAST) as d:
            running = threading.Thread(target=d.run, args=(stop, 0.2))
            running.start()
            time.sleep(1.0)
            stop.set()
            running.join()
        assert 1 <= len(turns) <= 8, len(turns)  # about one a poll, not hundreds
    finally:
        b.close()
