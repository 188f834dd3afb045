"""The HTTP write API (adapters/http/commands.py): commands, refusals, Idempotency-Key, previews
with quotes, and the test clock; in process (FastAPI's TestClient) and once through a real
`subledger serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from adapters.http.app import create_app
from adapters.http.idempotency import responses_table
from adapters.payments import TestPaymentGateway
from domain.commands import Actor, parse_command
from domain.errors import LedgerError
from domain.quotes import Pin
from domain.clock import SystemClock, TestClock
from domain.payments import ChargeRequest, ChargeResult, GatewayUnavailable
from tests.stripe_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 4, 1, tzinfo=timezone.utc)
PROBLEM = "application/problem+json"


class Api:
    """A TestClient on a fresh ledger on a test clock, with tokens of every role it needs."""

    def __init__(self, db: str, clock: Any = None, payments: Any = None, catalog: str = "forms") -> None:
        self.app = create_app(db, catalog=catalog, clock=clock or TestClock(START), payments=payments)
        self.client = TestClient(self.app).__enter__()
        tokens = self.app.state.tokens
        self.tokens = {role: tokens.create(role, "acme" if role in ("admin", "billing_admin", "member") else None)[1]
                       for role in ("admin", "billing_admin", "member", "support", "operator")}
        self.tokens["other_admin"] = tokens.create("admin", "other")[1]

    @property
    def ledger(self) -> Any:
        return self.app.state.ledger

    def post(self, path: str, body: Any = None, *, role: str = "admin", key: str | None = None,
             **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(path, json=body, headers=headers, params=params)

    def do(self, command: str, body: Any = None, workspace: str = "acme", **kw: Any) -> httpx.Response:
        return self.post(f"/v1/workspaces/{workspace}/{command}", body, **kw)

    def preview(self, command: str, body: Any = None, workspace: str = "acme", **kw: Any) -> httpx.Response:
        return self.post(f"/v1/workspaces/{workspace}/preview/{command}", body, **kw)

    def advance(self, to: str, role: str = "operator") -> httpx.Response:
        return self.post("/v1/test-clock/advance", {"to": to}, role=role)

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def on_pro(self) -> Api:
        assert self.do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
        assert self.do("subscribe", {"plan": "pro", "interval": "month"}).status_code == 200
        return self

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = Api(f"sqlite:///{tmp_path}/ledger.db")
    yield made
    made.close()


@pytest.fixture
def api_on_both(db_url: str) -> Iterator[Api]:
    made = Api(db_url)
    yield made
    made.close()


# ------------------------------------------------------------------ commands


def test_a_command_records_through_channel_api_and_returns_its_position_and_command_id(api_on_both: Api) -> None:
    api = api_on_both
    api.do("add-payment-method", {"payment_method": "pm_card_visa"})
    r = api.do("subscribe", {"plan": "pro", "reason": "signed up on the web"})
    assert r.status_code == 200
    out = r.json()
    assert out["position"] == api.head()
    types = [e["type"] for e in out["events"]]
    assert "InvoiceIssued" in types and types[-1] == "PaymentSucceeded"
    assert out["events"][-1]["notification_id"] == out["position"]
    assert {e["command_id"] for e in out["events"]} == {out["command_id"]}
    assert {e["channel"] for e in out["events"]} == {"api"}
    assert out["events"][0]["actor"]["role"] == "admin"
    assert out["events"][0]["fields"]["reason"] == "signed up on the web"
    assert out["invoices"][0]["amount_due"] == "19.00"
    assert out["state"]["plan"] == "pro"


def test_R2_only_the_workspace_admins_change_it(api: Api) -> None:
    for role, status in (("member", 403), ("support", 403), ("operator", 403), ("other_admin", 403), ("", 401)):
        r = api.do("add-payment-method", {"payment_method": "pm_card_visa"}, role=role)
        assert (r.status_code, r.headers["content-type"]) == (status, PROBLEM), role
    assert api.do("add-payment-method", {"payment_method": "pm_card_visa"}, role="billing_admin").status_code == 200


def test_R9_no_workspace_token_sets_or_lifts_a_contract(api: Api) -> None:
    """The admin a contract sends to sales could lift it and change plans self-serve (R9)."""
    api.on_pro()
    api.ledger.handle("acme", parse_command("set-contract", {"contract": "enterprise"}), Actor(id="sam", role="sales"))
    for role in ("admin", "billing_admin"):
        r = api.do("set-contract", {"contract": None}, role=role)
        assert (r.status_code, r.json()["code"]) == (403, "not_authorized"), role
    assert api.do("change-plan", {"plan": "team"}).json()["code"] == "contact_sales"
    assert api.ledger.get("acme").contract == "enterprise"


def test_R9_a_sales_token_sets_and_lifts_any_workspace_contract_and_nothing_else(api: Api) -> None:
    api.on_pro()
    made = api.post("/v1/tokens", {"role": "sales", "label": "sam"}, role="operator")
    assert made.status_code == 201, made.text
    sales = {"Authorization": f"Bearer {made.json()['token']}"}
    r = api.client.post("/v1/workspaces/acme/set-contract", json={"contract": "enterprise"}, headers=sales)
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["events"]] == ["ContractSet"]
    assert api.ledger.get("acme").contract == "enterprise"
    for path, body in (("change-plan", {"plan": "team"}), ("set-members", {"members": 1})):
        r = api.client.post(f"/v1/workspaces/acme/{path}", json=body, headers=sales)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), path
    assert api.client.get("/v1/workspaces/acme", headers=sales).status_code == 403
    r = api.client.post("/v1/workspaces/acme/set-contract", json={"contract": None}, headers=sales)
    assert r.status_code == 200 and api.ledger.get("acme").contract is None


def test_a_reserved_workspace_id_gets_no_token_and_no_command(api: Api) -> None:
    with pytest.raises(LedgerError, match="reserved"):
        api.app.state.tokens.create("admin", "verify")
    r = api.client.post("/v1/workspaces/verify/set-members", json={"members": 1},
                        headers={"Authorization": f"Bearer {api.tokens['admin']}"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden") and api.head() == 0


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"plan": "pro"}, 422, "already_on_plan"),
    ({"plan": "nope"}, 400, "unknown_plan"),
    ({"plan": "Bad Plan!"}, 400, "invalid_request"),
    ({"plan": "team", "seats": 0}, 400, "invalid_request"),
    ({"plan": "team", "colour": "red"}, 400, "invalid_request"),
])
def test_refusals_are_problem_json_with_their_status_and_record_nothing(api: Api, body: Any, status: int,
                                                                         code: str) -> None:
    api.on_pro()
    head = api.head()
    r = api.do("change-plan", body)
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (status, PROBLEM, code)
    assert api.head() == head


def test_a_body_sent_as_a_form_is_400_asking_for_json_and_records_nothing(api: Api) -> None:
    """`curl -d` sends application/x-www-form-urlencoded: the refusal says what to send."""
    api.on_pro()
    head = api.head()
    r = api.client.post("/v1/workspaces/acme/change-plan", content=b'{"plan": "team"}', headers={
        "Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (400, PROBLEM, "invalid_request")
    assert "Content-Type: application/json" in r.json()["detail"]
    assert api.head() == head


def test_a_body_over_1_mib_is_413_and_records_nothing(api: Api) -> None:
    api.on_pro()
    head = api.head()
    big = b'{"plan": "team", "reason": "' + b"a" * (1 << 20) + b'"}'
    headers = {"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json",
               "Idempotency-Key": "big"}
    for content in (big, iter([big[:4096], big[4096:]])):  # declared, then chunked without a length
        r = api.client.post("/v1/workspaces/acme/change-plan", content=content, headers=headers)
        assert (r.status_code, r.headers["content-type"]) == (413, PROBLEM)
    assert api.head() == head
    assert api.do("change-plan", {"plan": "team"}, key="big").status_code == 200


def test_R12_a_declined_upgrade_is_402_and_records_only_the_request_and_the_failure(api: Api) -> None:
    api.on_pro()
    api.do("add-payment-method", {"payment_method": "pm_card_chargeDeclined"})
    r = api.do("change-plan", {"plan": "team"})
    assert (r.status_code, r.json()["code"]) == (402, "payment_failed")
    assert r.json()["position"] == api.head()
    assert [e["type"] for e in r.json()["events"]] == ["ChargeRequested", "UpgradePaymentFailed"]
    assert r.json()["state"]["plan"] == "pro"


def test_R22_none_removes_the_storage_add_on_as_on_the_command_line(tmp_path: Path) -> None:
    api = Api(f"sqlite:///{tmp_path}/ledger.db", catalog="workspace")
    assert api.do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
    assert api.do("subscribe", {"plan": "team", "interval": "month", "seats": 2}).status_code == 200
    assert api.do("set-storage-addon", {"addon": "storage-100gb"}).status_code == 200
    removed = api.do("set-storage-addon", {"addon": "None"})
    assert removed.status_code == 200 and "StorageAddonChanged" in [e["type"] for e in removed.json()["events"]]
    again = api.do("set-storage-addon", {"addon": None})
    assert (again.status_code, again.json()["detail"]) == (400, "the workspace has no storage add-on to remove")
    api.close()


def test_R8_an_open_invoice_is_409(api: Api) -> None:
    api.on_pro()
    api.do("add-payment-method", {"payment_method": "pm_card_chargeDeclined"})
    api.advance("2026-05-01T00:00:00Z")
    r = api.do("change-plan", {"plan": "team"})
    assert (r.status_code, r.json()["code"]) == (409, "open_invoice")


# ------------------------------------------------------------------ idempotency


def test_the_same_key_and_body_replays_the_stored_response(api: Api) -> None:
    api.on_pro()
    first = api.do("change-plan", {"plan": "team"}, key="upgrade-1")
    head = api.head()
    again = api.do("change-plan", {"plan": "team"}, key="upgrade-1")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert api.head() == head


def test_the_same_key_with_another_body_is_409_naming_the_difference(api: Api) -> None:
    api.on_pro()
    api.do("change-plan", {"plan": "team"}, key="k1")
    head = api.head()
    r = api.do("change-plan", {"plan": "pro"}, key="k1")
    assert (r.status_code, r.json()["code"]) == (409, "idempotency_conflict")
    assert "body.plan" in r.json()["detail"]
    r = api.do("set-seats", {"seats": 2}, key="k1")
    assert r.status_code == 409 and "path" in r.json()["detail"]
    assert api.head() == head


def test_a_key_reused_without_the_quote_names_the_quote_wherever_it_was_given(api: Api) -> None:
    api.on_pro().advance("2026-04-11T00:00:00Z")
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    assert api.do("change-plan", {"plan": "team", "quote": quote}, key="q1").status_code == 200
    r = api.do("change-plan", {"plan": "team"}, key="q1")
    assert (r.status_code, r.json()["code"]) == (409, "idempotency_conflict")
    assert "quote" in r.json()["detail"] and "query." not in r.json()["detail"] and "body.plan" not in r.json()["detail"]


def test_a_malformed_json_body_says_so_in_plain_words(api: Api) -> None:
    api.on_pro()
    head = api.head()
    r = api.client.post("/v1/workspaces/acme/set-seats", content=b'{"seats": ',
                        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_request")
    assert r.json()["detail"].startswith("the body is not valid JSON: ") and "at character 10" in r.json()["detail"]
    assert api.head() == head


def test_a_number_of_thousands_of_digits_is_refused_in_plain_words(api: Api) -> None:
    """Python's refusal advised `sys.set_int_max_str_digits()`: words for a developer, not the sender."""
    api.on_pro()
    head = api.head()
    r = api.client.post("/v1/workspaces/acme/set-seats", content=b'{"seats": ' + b"9" * 5000 + b"}",
                        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_request")
    assert "a number of 5000 digits" in r.json()["detail"] and "sys." not in r.json()["detail"]
    assert api.head() == head


def test_a_json_body_giving_a_key_twice_is_refused_and_records_nothing(api: Api) -> None:
    """{"members": 2, "members": 7} recorded 7: a proxy or validator reading the first value passed
    a request other than the one the ledger recorded."""
    api.on_pro()
    head = api.head()
    r = api.client.post("/v1/workspaces/acme/set-members", content=b'{"members": 2, "members": 7}',
                        headers={"Authorization": f"Bearer {api.tokens['admin']}", "Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_request")
    assert r.json()["detail"] == ("the body cannot be taken as JSON: the key 'members' is given twice in one object: "
                                  "send each key once")
    assert api.head() == head


def test_a_key_whose_payment_was_completed_a_day_later_replays_and_never_charges_again(api: Api) -> None:
    """A 402 awaiting 3-D Secure stores no answer; the customer completes it 22 hours later, and
    the client retries 25 hours after its first try. The key is kept 24 hours from the command's
    outcome, not from its first use: the retry replays."""
    api.on_pro()
    assert api.do("add-payment-method", {"payment_method": "pm_card_authenticationRequired"}).status_code == 200
    first = api.do("change-plan", {"plan": "team"}, key="upgrade-3ds")
    assert (first.status_code, first.json()["code"]) == (402, "payment_action_required")
    assert api.advance("2026-04-01T22:00:00Z").status_code == 200
    ledger = api.ledger
    for charge in ledger.get("acme").pending_charges.values():
        ledger.payments.confirm(charge["charge_key"])
    assert ledger.resolve_payments("acme")
    assert api.advance("2026-04-02T01:00:00Z").status_code == 200
    assert api.do("add-payment-method", {"payment_method": "pm_card_visa"}).status_code == 200
    head, charges = api.head(), len(ledger.payments.charges())
    again = api.do("change-plan", {"plan": "team"}, key="upgrade-3ds")
    assert again.status_code == 200 and again.json()["replayed"] is True, again.json()
    assert (api.head(), len(ledger.payments.charges())) == (head, charges)


def test_bad_input_stores_nothing_under_the_key(api: Api) -> None:
    api.on_pro()
    assert api.do("change-plan", {"plan": 7}, key="k2").status_code == 400
    assert api.do("change-plan", {"plan": "team"}, key="k2").status_code == 200


def test_a_key_is_at_most_255_characters(api: Api) -> None:
    assert api.do("set-members", {"members": 1}, key="x" * 256).status_code == 400
    assert api.do("set-members", {"members": 1}, key="x" * 255).status_code == 200


def test_a_key_is_forgotten_24_hours_after_its_use_and_its_reuse_is_a_new_request(api_on_both: Api) -> None:
    """Stripe's rule, on the ledger's clock: an old key no longer replays (nor conflicts), a
    recent one still does; the table keeps only the recent one."""
    api = api_on_both
    api.on_pro()
    old = api.do("set-members", {"members": 2}, key="old")
    assert api.do("set-members", {"members": 1}, key="never-again").status_code == 200
    api.advance("2026-04-01T12:00:00Z")
    recent = api.do("set-members", {"members": 3}, key="recent")
    api.advance("2026-04-02T00:00:01Z")
    head = api.head()
    reused = api.do("set-members", {"members": 4}, key="old")
    assert reused.status_code == 200 and "Idempotent-Replayed" not in reused.headers
    assert reused.json()["command_id"] != old.json()["command_id"] and api.head() > head
    again = api.do("set-members", {"members": 3}, key="recent")
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == recent.json()
    assert api.do("set-members", {"members": 5}, key="old").status_code == 409  # the new use is kept 24 h
    stored = api.app.state.idempotency.tables.run(
        lambda conn: conn.execute(select(responses_table.c.key_hash, responses_table.c.created_at)).all())
    assert sorted(at.isoformat() for _, at in stored) == ["2026-04-01T12:00:00+00:00", "2026-04-02T00:00:01+00:00"]
    assert len(stored) == 2  # "recent" and the new use of "old": "never-again" and the first "old" are purged


def test_concurrent_requests_with_one_key_record_once(api: Api) -> None:
    api.on_pro()
    results: list[httpx.Response] = []

    def upgrade() -> None:
        results.append(api.do("change-plan", {"plan": "team"}, key="race"))

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.json()["command_id"] for r in results}) == 1
    events = api.ledger.workspace_events("acme")
    assert sum(type(e).__name__ == "PlanUpgraded" for e in events) == 1
    assert sum(type(e).__name__ == "PaymentSucceeded" for e in events) == 2  # subscribe + the upgrade


class ProviderDown(TestPaymentGateway):
    """The test gateway, silent while `down` (the outcome unknown, the charge left pending)."""

    down = False

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if self.down:
            raise GatewayUnavailable("the provider did not answer")
        return super().charge(request)


def test_a_pending_payment_is_not_stored_so_the_same_key_later_tells_the_outcome_and_charges_once(
        tmp_path: Path) -> None:
    """A stored 409 payment_pending would answer for ever after the charge went through, and a
    client giving up on its key would pay again under a new one."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    gateway = ProviderDown(db)
    api = Api(db, payments=gateway).on_pro()
    try:
        gateway.down = True
        pending = api.do("change-plan", {"plan": "team"}, key="up-1")
        assert (pending.status_code, pending.json()["code"]) == (409, "payment_pending")
        gateway.down = False
        settled = api.do("change-plan", {"plan": "team"}, key="up-1")
        assert settled.status_code == 200 and settled.headers["Idempotent-Replayed"] == "true"
        assert settled.json()["state"]["plan"] == "team"
        assert api.do("change-plan", {"plan": "team"}, key="up-1").json() == settled.json()
        assert [c["outcome"] for c in gateway.charges("acme") if "upgrade" in c["description"]] == ["succeeded"]
    finally:
        api.close()
        gateway.close()


# ------------------------------------------------------------------ previews and quotes


def test_R13_R25_the_quote_commits_exactly_the_previewed_20_00(api_on_both: Api) -> None:
    api = api_on_both.on_pro()
    assert api.advance("2026-04-11T00:00:00Z").status_code == 200
    head = api.head()
    preview = api.preview("change-plan", {"plan": "team"}).json()
    assert api.head() == head
    assert preview["amount_due"] == "20.00"
    assert [(line["kind"], line["amount"]) for line in preview["invoices"][0]["lines"]] == [
        ("plan_credit", "-12.67"), ("plan_charge", "32.67")]
    assert preview["outcome"]["plan"] == "team" and preview["outcome"]["next_renewal"]["amount_due"] == "49.00"
    api.advance("2026-04-11T00:10:00Z")  # later, the same day: the same lines
    r = api.do("change-plan", {"plan": "team"}, quote=preview["quote"]["id"])
    assert r.status_code == 200
    def terms(invoices: list[dict[str, Any]]) -> list[Any]:
        return [(i["amount_due"], [(x["kind"], x["amount"], x["formula"], x["period"]["end"]) for x in i["lines"]])
                for i in invoices]

    assert terms(r.json()["invoices"]) == terms(preview["invoices"])


def test_R25_a_quote_is_stale_once_the_workspace_changed(api: Api) -> None:
    api.on_pro().advance("2026-04-11T00:00:00Z")
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    api.do("set-members", {"members": 2})
    head = api.head()
    r = api.do("change-plan", {"plan": "team", "quote": quote})
    assert (r.status_code, r.json()["code"]) == (409, "quote_stale")
    assert api.head() == head and api.ledger.get("acme").plan == "pro"


def test_R25_a_quote_already_committed_is_stale_not_already_on_plan(api: Api) -> None:
    """Sent again after it was committed (no idempotency key), the quote is refused as stale, as
    docs/http.md says; before, the command was decided first and answered already_on_plan."""
    api.on_pro().advance("2026-04-11T00:00:00Z")
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    assert api.do("change-plan", {"plan": "team", "quote": quote}).status_code == 200
    r = api.do("change-plan", {"plan": "team", "quote": quote})
    assert (r.status_code, r.json()["code"]) == (409, "quote_stale")
    stale = api.ledger.handle("acme", parse_command("change-plan", {"plan": "team"}), Actor(id="bob", role="member"),
                              pin=Pin(1, "sha256:old", []))
    assert stale.error.code == "not_authorized"  # who may not give the command is told that first (R2)


def test_R25_a_quote_is_stale_when_time_changed_the_proration(api: Api) -> None:
    api.on_pro().advance("2026-04-11T23:50:00Z")
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    api.advance("2026-04-12T00:10:00Z")  # a day less to prorate
    head = api.head()
    r = api.do("change-plan", {"plan": "team"}, quote=quote)
    assert (r.status_code, r.json()["code"]) == (409, "quote_stale")
    assert api.head() == head


def test_a_quote_commits_only_its_own_command_and_expires(tmp_path: Path) -> None:
    api = Api(f"sqlite:///{tmp_path}/l.db")
    api.app.state.quotes.ttl = timedelta(minutes=30)
    try:
        api.on_pro()
        quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
        assert api.do("change-plan", {"plan": "team", "seats": 3}, quote=quote).json()["code"] == "invalid_request"
        assert api.do("change-plan", {"plan": "team"}, quote="qt_" + "0" * 24).status_code == 404
        api.advance("2026-04-01T00:31:00Z")
        assert api.do("change-plan", {"plan": "team"}, quote=quote).json()["code"] == "quote_stale"
    finally:
        api.close()


def test_an_expired_quote_is_forgotten_a_day_after_it_expires(api: Api) -> None:
    api.app.state.quotes.ttl = timedelta(minutes=30)
    api.on_pro()
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    api.advance("2026-04-02T00:29:00Z")
    api.preview("change-plan", {"plan": "team"})
    assert api.do("change-plan", {"plan": "team"}, quote=quote).json()["code"] == "quote_stale"
    api.advance("2026-04-02T00:31:00Z")
    api.preview("change-plan", {"plan": "team"})
    assert api.do("change-plan", {"plan": "team"}, quote=quote).json()["code"] == "not_found"


def test_support_may_preview_but_never_commit_and_members_do_neither(api: Api) -> None:
    api.on_pro()
    assert api.preview("change-plan", {"plan": "team"}, role="support").status_code == 200
    assert api.preview("change-plan", {"plan": "team"}, role="member").status_code == 403
    assert api.do("change-plan", {"plan": "team"}, role="support").status_code == 403


def test_a_preview_retried_with_its_key_replays_the_same_quote(api: Api) -> None:
    api.on_pro()
    first = api.preview("change-plan", {"plan": "team"}, key="p1")
    again = api.preview("change-plan", {"plan": "team"}, key="p1")
    assert again.json()["quote"] == first.json()["quote"] and again.headers["Idempotent-Replayed"] == "true"
    assert api.preview("change-plan", {"plan": "team", "seats": 2}, key="p1").status_code == 409


def test_a_refused_preview_is_problem_json(api: Api) -> None:
    api.on_pro()
    r = api.preview("change-plan", {"plan": "pro"})
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (422, PROBLEM, "already_on_plan")


def test_openapi_shows_the_domain_command_models(api: Api) -> None:
    spec = api.app.openapi()
    body = spec["paths"]["/v1/workspaces/{workspace}/change-plan"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChangePlanRequest")
    assert set(spec["components"]["schemas"]["ChangePlanRequest"]["properties"]) >= {"plan", "tier", "reason", "quote"}
    preview = spec["paths"]["/v1/workspaces/{workspace}/preview/change-plan"]["post"]["requestBody"]
    assert preview["content"]["application/json"]["schema"]["$ref"].endswith("/ChangePlan")


def test_openapi_documents_every_route_s_refusals_as_problem_json(api: Api) -> None:
    """Reads, replay, tokens, webhooks and the test clock listed only FastAPI's own 422
    HTTPValidationError, a shape this API never sends: bad input is 400 problem+json."""
    spec = api.app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path in ("/healthz", "/readyz"):
                continue
            refusals = {s: r for s, r in operation["responses"].items() if s[0] == "4"}
            assert "400" in refusals and "4XX" in refusals, (method, path, sorted(operation["responses"]))
            for status, response in refusals.items():
                assert response["content"][PROBLEM]["schema"]["$ref"].endswith("/Problem"), (method, path, status)
    support = {"Authorization": f"Bearer {api.tokens['support']}"}
    bad = api.client.get("/v1/workspaces", params={"limit": 0}, headers=support)
    assert str(bad.status_code) in spec["paths"]["/v1/workspaces"]["get"]["responses"]


# ------------------------------------------------------------------ test clock


def test_the_test_clock_moves_forward_and_records_what_fell_due(api: Api) -> None:
    api.on_pro()
    r = api.advance("2026-05-01T00:00:00Z")
    assert r.status_code == 200 and "InvoiceIssued" in r.json()["due"]["acme"]
    assert r.json()["position"] == api.head()
    assert api.advance("2026-04-15T00:00:00Z").json()["code"] == "clock_conflict"
    assert api.advance("2026-06-01T00:00:00Z", role="admin").status_code == 403
    assert api.advance("yesterday").status_code == 400
    misspelt = api.post("/v1/test-clock/advance", {"to": "2026-06-01T00:00:00Z", "x": 1}, role="operator")
    assert misspelt.status_code == 400 and api.ledger.clock.now().month == 5  # it moved the clock, 200


def test_there_is_no_test_clock_on_the_system_clock(tmp_path: Path) -> None:
    api = Api(f"sqlite:///{tmp_path}/l.db", clock=SystemClock())
    try:
        assert api.advance("2030-01-01T00:00:00Z").status_code == 404
    finally:
        api.close()


def test_the_seed_003_story_over_http(api: Api) -> None:
    """Subscribe Pro, upgrade to Team mid-cycle with a quote (20.00), schedule a downgrade, keep
    the current plan, the renewal fails, a change is refused (R8), the invoice is paid, the
    change is allowed."""
    api.on_pro().advance("2026-04-11T00:00:00Z")
    quote = api.preview("change-plan", {"plan": "team"}).json()["quote"]["id"]
    assert api.do("change-plan", {"plan": "team", "quote": quote}).json()["invoices"][0]["amount_due"] == "20.00"
    scheduled = api.do("change-plan", {"plan": "pro"}).json()["state"]["scheduled_change"]
    assert scheduled["kind"] == "downgrade" and scheduled["effective_at"] == "2026-05-01T00:00:00Z"
    assert api.do("cancel-change").json()["state"]["scheduled_change"] is None
    api.do("add-payment-method", {"payment_method": "pm_card_chargeDeclined"})
    api.advance("2026-05-01T00:00:00Z")
    refused = api.do("change-plan", {"plan": "pro"})
    assert (refused.status_code, refused.json()["code"], refused.json()["rule"]) == (409, "open_invoice", "R8")
    api.do("add-payment-method", {"payment_method": "pm_card_visa"})
    assert api.do("pay-invoice").json()["state"]["open_invoice"] is None
    allowed = api.do("change-plan", {"plan": "pro"})
    assert allowed.status_code == 200 and allowed.json()["state"]["scheduled_change"]["plan"] == "pro"


# ------------------------------------------------------------------ a real server


def test_subledger_serve_takes_a_command_over_real_http(tmp_path: Path) -> None:
    env = {**os.environ, "SUBLEDGER_DB": f"sqlite:///{tmp_path}/ledger.db", "SUBLEDGER_TEST_CLOCK": "2026-04-01T00:00:00Z",
           "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "adapters.cli"]
    made = subprocess.run([*cli, "tokens", "create", "--role", "admin", "--workspace", "acme", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    port = free_port()
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=10) as http:
            for _ in range(200):
                try:
                    http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                    time.sleep(0.1)
            assert http.post("/v1/workspaces/acme/add-payment-method", json={"payment_method": "pm_card_visa"},
                             headers={"Idempotency-Key": "pm-1"}).status_code == 200
            r = http.post("/v1/workspaces/acme/subscribe", json={"plan": "pro"})
            assert r.status_code == 200 and r.json()["invoices"][0]["amount_due"] == "19.00"
            assert r.json()["position"] >= 1 and r.json()["state"]["plan"] == "pro"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_test_clock_names_a_workspace_it_passed_over_and_says_where_it_moved(tmp_path: Path) -> None:
    """A plain 400 said neither that the clock had moved nor that every other workspace had lived
    up to it: the answer carries `now`, `due`, `position` and `failed`."""
    from domain.catalog import Catalog
    from tests.support import BIG

    api = Api(f"sqlite:///{tmp_path}/ledger.db")
    try:
        api.ledger.catalogs["big"], api.ledger.default_catalog = Catalog.model_validate(tomllib.loads(BIG)), "big"
        for ws in ("acme", "other"):
            assert api.do("add-payment-method", {"payment_method": "pm_card_visa"}, workspace=ws,
                          role="admin" if ws == "acme" else "other_admin").status_code == 200
        assert api.do("subscribe", {"plan": "b", "seats": 100_000}).status_code == 200
        assert api.do("set-storage-addon", {"addon": "huge"}).status_code == 200
        assert api.do("subscribe", {"plan": "a", "seats": 2}, workspace="other", role="other_admin").status_code == 200
        r = api.advance("2026-06-02T00:00:00Z")
        body = r.json()
        assert (r.status_code, body["code"], list(body["failed"])) == (400, "invalid_request", ["acme"])
        assert body["now"] == "2026-06-02T00:00:00Z" and "PeriodRenewed" in body["due"]["other"] and body["position"]
    finally:
        api.close()
