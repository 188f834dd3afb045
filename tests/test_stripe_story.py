"""The seed 003 story end to end: `subledger serve` in a process of its own on PostgreSQL,
charging through localstripe, whose webhooks go over HTTP to that server; driven with httpx
and a test clock moved over HTTP, checked only through what the API answers; then `subledger
stripe reconcile` finds no difference.

A renewal declined at Stripe is recorded when the ledger asks (the test clock's advance), so
localstripe's webhook reporting it later records nothing more: its redelivery is answered as a
duplicate of a `nothing_pending` event, and the failure is in the audit trail once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_process import Server, cli, make_tokens
from tests.stripe_fixtures import LocalStripe, localstripe, signed, stripe_env  # noqa: F401

pytestmark = pytest.mark.postgres

WS = "story"


@pytest.fixture
def heard() -> Iterator[tuple[list[dict[str, Any]], str]]:
    """The events localstripe sends to a listener of the test, and the listener's URL. Registered
    after the server's webhook, it hears each event once the server has answered it: localstripe
    delivers to its webhooks one after the other, in the order they were registered."""
    events: list[dict[str, Any]] = []

    class Listener(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    listener = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        yield events, f"http://127.0.0.1:{listener.server_address[1]}/"
    finally:
        listener.shutdown()
        listener.server_close()


def reported(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one event of `kind` about this workspace's PaymentIntents, waited for at most 20 s."""
    deadline = time.monotonic() + 20
    while True:
        found = [e for e in events if e["type"] == kind and e["data"]["object"]["metadata"].get("workspace") == WS]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"localstripe sent {len(found)} {kind} about {WS}"
    return found[0]


def test_the_seed_003_story_over_http_on_stripe_leaves_no_difference_to_reconcile(
        stripe_env: LocalStripe, heard: tuple[list[dict[str, Any]], str], pg_url: str, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-04-01T00:00:00Z")
    tokens = make_tokens(pg_url, {"admin": ("admin", WS), "operator": ("operator", None)})
    server = Server(pg_url, tmp_path / "serve.log", catalog="forms")
    server.start()
    try:
        stripe_env.register_webhook("story", f"{server.base}/stripe/webhook")
        stripe_env.register_webhook("story-listener", heard[1])
        with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {tokens['admin']}"},
                          timeout=30) as http:

            def do(command: str, body: dict[str, Any] | None = None) -> Any:
                return http.post(f"/v1/workspaces/{WS}/{command}", json=body or {})

            def read(path: str, position: int) -> Any:
                answer = http.get(f"/v1{path}", params={"min_position": position, "limit": 100})
                assert answer.status_code == 200, answer.text
                return answer.json()

            def advance(to: str) -> Any:
                moved = http.post("/v1/test-clock/advance", json={"to": to},
                                  headers={"Authorization": f"Bearer {tokens['operator']}"})
                assert moved.status_code == 200, moved.text
                return moved.json()

            assert do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
            assert do("subscribe", {"plan": "pro"}).json()["invoices"][0]["amount_due"] == "19.00"
            advance("2026-04-11T00:00:00Z")
            preview = http.post(f"/v1/workspaces/{WS}/preview/change-plan", json={"plan": "team"}).json()
            assert [line["amount"] for line in preview["invoices"][0]["lines"]] == ["-12.67", "32.67"]
            assert preview["amount_due"] == "20.00"
            upgrade = do("change-plan", {"plan": "team", "quote": preview["quote"]["id"]})
            assert upgrade.json()["invoices"][0]["amount_due"] == "20.00"
            assert do("change-plan", {"plan": "pro"}).json()["state"]["scheduled_change"]["kind"] == "downgrade"
            assert do("cancel-change").json()["state"]["scheduled_change"] is None
            assert do("add-payment-method", {"payment_method": "pm_card_chargeDeclined"}).status_code == 200

            renewal = advance("2026-05-01T00:00:00Z")
            assert renewal["due"][WS][-1] == "PaymentFailed"
            state = read(f"/workspaces/{WS}", renewal["position"])
            assert (state["status"], state["plan"]) == ("past_due", "team")
            invoice = read(f"/invoices/{state['open_invoice']}", renewal["position"])
            assert (invoice["status"], invoice["amount_due"], invoice["last_failure_code"]) == \
                ("open", "49.00", "card_declined")

            failed = reported(heard[0], "payment_intent.payment_failed")
            again = http.post("/stripe/webhook", **signed(failed)).json()
            assert (again["outcome"], again["first"]) == ("duplicate", "nothing_pending")
            trail = read(f"/workspaces/{WS}/audit", renewal["position"])["data"]
            assert [r["channel"] for r in trail if r["event_type"] == "PaymentFailed"] == ["scheduler"]
            assert [r for r in trail if r["channel"] == "billing_provider"] == []

            refused = do("change-plan", {"plan": "pro"})
            assert (refused.status_code, refused.json()["code"]) == (409, "open_invoice")  # R8
            assert do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
            paid = do("pay-invoice")
            assert paid.json()["state"]["open_invoice"] is None
            assert read(f"/invoices/{invoice['invoice_id']}", paid.json()["position"])["status"] == "paid"
            assert do("change-plan", {"plan": "pro"}).status_code == 200
    finally:
        server.stop()
    reconciled = cli(pg_url, "stripe", "reconcile", "--json", catalog="forms")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    report = json.loads(reconciled.stdout)
    assert (report["differences"], report["checked"]["payments"]) == ([], 3)
