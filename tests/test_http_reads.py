"""The HTTP reads answer what the command-line reads print (same ledger: the demo story),
page with cursors, export the audit trail as streamed CSV and JSON Lines, honour min_position
(read-your-writes) and report projection lag on /readyz."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adapters import failures
from adapters.cli import app as cli_app
from domain.commands import Actor, parse_command
from projections import audit_trail
from tests.http_support import NOW, bearer, client, copy_db, demo_db, tokens, walk

WORKSPACES = ("acme", "beta", "studio", "flowops")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBLEDGER_DB", "sqlite:///unused-placeholder.db")  # the CLI exports its --db here
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", NOW)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> str:
    return demo_db(tmp_path_factory)


@pytest.fixture(scope="module")
def api(demo: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    for c in client(demo):
        yield c, bearer(tokens(c)["support"])


def cli(db: str, *args: str) -> Any:
    result = CliRunner().invoke(cli_app, ["--db", db, *args])
    assert result.exit_code == 0, result.output
    return result.output


def cli_json(db: str, *args: str) -> Any:
    return json.loads(cli(db, *args))


def test_workspace_reads_answer_what_the_cli_prints(demo: str, api: Any) -> None:
    c, support = api
    assert walk(c, "/v1/workspaces", support, "workspace") == cli_json(demo, "workspaces", "--json")
    for ws in WORKSPACES:
        assert c.get(f"/v1/workspaces/{ws}", headers=support).json() == cli_json(demo, "show", ws, "--json")
        printed = cli_json(demo, "invoices", ws, "--json")
        assert walk(c, f"/v1/workspaces/{ws}/invoices", support, "invoice_id") == printed["invoices"]
        assert c.get(f"/v1/workspaces/{ws}/upcoming-invoice", headers=support).json() == \
            {"workspace": ws, "upcoming": printed["upcoming"]}
        entitlements = cli_json(demo, "entitlements", ws, "--json")
        entitlements.pop("ok")
        assert c.get(f"/v1/workspaces/{ws}/entitlements", headers=support).json() == entitlements
    assert c.get("/v1/journal/trial-balance", headers=support).json() == cli_json(demo, "books", "--json")
    assert c.get("/v1/journal/trial-balance", headers=support, params={"workspace": "acme", "at": "2026-04-30"}).json() \
        == cli_json(demo, "books", "--workspace", "acme", "--at", "2026-04-30", "--json")


def test_invoice_by_id_is_the_invoice_with_its_lines(demo: str, api: Any) -> None:
    c, support = api
    (upgrade,) = [i for i in cli_json(demo, "invoices", "acme", "--json")["invoices"] if i["invoice_id"] == "in_acme_0002"]
    got = c.get("/v1/invoices/in_acme_0002", headers=support).json()
    assert got == upgrade and got["amount_due"] == "20.00"
    assert [line["amount"] for line in got["lines"]] == ["-12.67", "32.67"]
    assert c.get("/v1/invoices/in_acme_0999", headers=support).status_code == 404


def test_replays_answer_what_replay_prints(demo: str, api: Any) -> None:
    c, support = api
    explained = c.get("/v1/invoices/in_acme_0002/explain", headers=support)
    assert explained.json() == cli_json(demo, "replay", "explain", "in_acme_0002", "--format", "json")
    markdown = c.get("/v1/invoices/in_acme_0002/explain", headers=support, params={"format": "md"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == cli(demo, "replay", "explain", "in_acme_0002", "--format", "md")[:-1]
    as_of = c.get("/v1/workspaces/acme/as-of", headers=support, params={"at": "2026-04-15T00:00:00Z"}).json()
    assert as_of == cli_json(demo, "replay", "as-of", "acme", "--at", "2026-04-15T00:00:00Z", "--format", "json")
    assert as_of["state"]["plan"] == "team"
    what_if = c.post("/v1/workspaces/acme/what-if", headers=support, json={"policy": {"proration": "second"}})
    assert what_if.json() == cli_json(demo, "replay", "what-if", "acme", "--policy", "proration=second",
                                      "--format", "json")
    csv_report = c.post("/v1/workspaces/acme/what-if", headers=support, params={"format": "csv"},
                        json={"catalog": "forms"})
    assert csv_report.headers["content-type"].startswith("text/csv")
    assert csv_report.text.splitlines()[0].startswith("workspace,invoice_id")


def test_a_what_if_names_a_catalog_the_ledger_knows_never_a_file(api: Any) -> None:
    c, support = api
    refused = c.post("/v1/workspaces/acme/what-if", headers=support, json={"catalog": "/etc/passwd"})
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    assert c.post("/v1/workspaces/acme/what-if", headers=support, json={}).status_code == 400


def test_audit_exports_are_the_cli_exports_streamed(demo: str, api: Any) -> None:
    c, support = api
    for fmt, media in (("csv", "text/csv"), ("jsonl", "application/x-ndjson")):
        got = c.get("/v1/workspaces/acme/audit", headers=support, params={"format": fmt})
        assert got.headers["content-type"].startswith(media)
        assert got.headers["content-disposition"] == f'attachment; filename="audit-acme.{fmt}"'
        assert got.text.replace("\r\n", "\n") == cli(demo, "audit", "acme", "--format", fmt).replace("\r\n", "\n")
    rows = [json.loads(line) for line in cli(demo, "audit", "acme", "--format", "jsonl").splitlines()]
    assert walk(c, "/v1/workspaces/acme/audit", support, "position", limit=5) == rows


def test_audit_time_filters_keep_since_inclusive_until_exclusive(demo: str, api: Any) -> None:
    c, support = api
    window = {"since": "2026-04-11T00:00:00Z", "until": "2026-05-01T00:00:00Z"}
    rows = walk(c, "/v1/workspaces/acme/audit", support, "position", limit=100, **window)
    assert rows and all(window["since"] <= r["occurred_at"] < window["until"] for r in rows)
    assert rows == [json.loads(line) for line in cli(demo, "audit", "acme", "--since", window["since"], "--until",
                                                    window["until"], "--format", "jsonl").splitlines()]
    bad = c.get("/v1/workspaces/acme/audit", headers=support, params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    inverted = c.get("/v1/workspaces/acme/audit", headers=support, params={"since": window["until"],
                                                                          "until": window["since"]})
    assert inverted.status_code == 400 and "must be before until" in inverted.json()["detail"]


def test_pages_follow_their_cursors_to_the_end_once(api: Any) -> None:
    c, support = api
    every = c.get("/v1/workspaces/acme/invoices", headers=support, params={"limit": 100}).json()
    assert every["has_more"] is False and len(every["data"]) >= 3
    ids = [i["invoice_id"] for i in every["data"]]
    assert [i["invoice_id"] for i in walk(c, "/v1/workspaces/acme/invoices", support, "invoice_id", limit=1)] == ids
    first = c.get("/v1/workspaces/acme/invoices", headers=support).json()
    assert len(first["data"]) == min(10, len(ids))
    after_last = c.get("/v1/workspaces/acme/invoices", headers=support, params={"starting_after": ids[-1]}).json()
    assert after_last == {"object": "list", "data": [], "has_more": False}
    for bad in ({"limit": 0}, {"limit": 101}, {"starting_after": "in_nope_0001"}):
        refused = c.get("/v1/workspaces/acme/invoices", headers=support, params=bad)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"


def test_R12_a_declined_purchase_s_void_invoice_is_explained_as_replay_prints_it(demo: str, api: Any) -> None:
    """The void invoice answers 200, not 404: its lines from the charge request, void by the decline."""
    c, support = api
    void = next(i for i in cli_json(demo, "invoices", "beta", "--json")["invoices"] if i["status"] == "void")
    explained = c.get(f"/v1/invoices/{void['invoice_id']}/explain", headers=support)
    assert explained.status_code == 200
    doc = explained.json()
    assert doc == cli_json(demo, "replay", "explain", void["invoice_id"], "--format", "json")
    assert [line["amount"] for line in doc["lines"]] == [line["amount"] for line in void["lines"]]
    assert doc["void"]["decline_code"] == "card_declined" and "nothing is owed (R12)" in doc["void"]["reason"]
    markdown = c.get(f"/v1/invoices/{void['invoice_id']}/explain", headers=support, params={"format": "md"}).text
    assert f"**void**, requested {void['issued_at']}" in markdown
    assert f"| | Would have been due | {void['amount_due']} | not owed: void | R12 |" in markdown


def test_unknown_workspaces_and_invoices_are_404(api: Any) -> None:
    c, support = api
    for path in ("/v1/workspaces/nobody", "/v1/workspaces/nobody/invoices", "/v1/workspaces/nobody/audit",
                 "/v1/workspaces/nobody/as-of?at=2026-05-01", "/v1/invoices/in_nobody_0001",
                 "/v1/invoices/in_nobody_0001/explain", "/v1/invoices/not-an-invoice-id"):
        got = c.get(path, headers=support)
        assert (got.status_code, got.json()["code"]) == (404, "not_found"), path


# ------------------------------------------------------------------ read-your-writes and readiness


@pytest.fixture
def fresh(demo: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """An app on a copy of the demo ledger, its read models caught up."""
    for c in client(copy_db(demo, tmp_path)):
        c.app.state.read_side.catch_up()  # type: ignore[attr-defined]
        yield c, bearer(tokens(c)["support"])


def write(c: TestClient, members: int) -> int:
    """Record a change the way a command does; its notification position."""
    ledger = c.app.state.ledger  # type: ignore[attr-defined]
    assert ledger.handle("beta", parse_command("set-members", {"members": members}), Actor(id="al", role="admin")).ok
    return ledger.recorder.max_notification_id()


def test_a_read_with_min_position_sees_the_write_inline(fresh: Any) -> None:
    c, support = fresh
    position = write(c, 2)
    got = c.get("/v1/workspaces/beta", headers=support, params={"min_position": position})
    assert got.status_code == 200 and got.json()["members"] == 2


def test_a_read_behind_min_position_is_refused_after_the_bounded_wait(fresh: Any) -> None:
    c, support = fresh
    side = c.app.state.read_side  # type: ignore[attr-defined]
    side.follower, side.wait = True, 0.2  # ok-float: seconds
    position = write(c, 2)
    behind = c.get("/v1/workspaces/beta", headers=support, params={"min_position": position})
    assert behind.status_code == 503 and behind.json()["code"] == "read_models_behind"
    assert behind.headers["content-type"] == "application/problem+json"
    assert c.get("/v1/workspaces/beta", headers=support).json()["members"] != 2  # read as it stands
    side.projections.catch_up()  # the follower's work
    assert c.get("/v1/workspaces/beta", headers=support, params={"min_position": position}).json()["members"] == 2


def test_a_read_waits_for_the_follower_to_reach_min_position(fresh: Any) -> None:
    c, support = fresh
    side = c.app.state.read_side  # type: ignore[attr-defined]
    side.follower, side.wait = True, 30.0  # ok-float: seconds
    position = write(c, 3)
    follower = threading.Timer(0.3, side.projections.catch_up)  # ok-float: seconds
    follower.start()
    got = c.get("/v1/workspaces/beta/audit", headers=support, params={"min_position": position, "limit": 100})
    follower.join()
    assert got.status_code == 200 and got.json()["data"][-1]["position"] == position


def test_event_reads_wait_only_for_the_event_store(fresh: Any) -> None:
    c, support = fresh
    side = c.app.state.read_side  # type: ignore[attr-defined]
    side.follower, side.wait = True, 0.2  # ok-float: seconds
    position = write(c, 2)
    got = c.get("/v1/workspaces/beta/as-of", headers=support, params={"version": 1, "min_position": position})
    assert got.status_code == 200


def test_a_min_position_beyond_the_head_is_refused_at_once_naming_the_head(fresh: Any) -> None:
    """No write returned it, so no wait would reach it: 400, not 503 after the read wait."""
    c, support = fresh
    side = c.app.state.read_side  # type: ignore[attr-defined]
    side.wait = 3600.0  # ok-float: seconds; the refusal must not wait
    head = write(c, 2)
    for path in ("/v1/workspaces/beta", "/v1/workspaces/beta/as-of?version=1"):
        ahead = c.get(path, headers=support, params={"min_position": head + 5})
        assert (ahead.status_code, ahead.json()["code"]) == (400, "position_ahead"), path
        assert ahead.headers["content-type"] == "application/problem+json"
        assert ahead.json()["detail"] == (f"min_position {head + 5} is beyond the ledger's head, position {head}: no "
                                          "write has been recorded there; pass the position a write returned")
    assert c.get("/v1/workspaces/beta", headers=support, params={"min_position": head}).status_code == 200


def test_readyz_reports_each_read_models_lag_and_503_when_far_behind(fresh: Any) -> None:
    c, _ = fresh
    side = c.app.state.read_side  # type: ignore[attr-defined]
    ready = c.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["read_models"]) >= {"plan_state", "invoices", "audit_trail"}
    assert all(m["lag"] == 0 and m["position"] == ready["head"] for m in ready["read_models"].values())
    side.follower, side.far_behind = True, 0
    position = write(c, 2)
    behind = c.get("/readyz")
    assert behind.status_code == 503 and behind.headers["content-type"] == "application/problem+json"
    assert behind.json()["head"] == position
    assert all(m["lag"] > 0 for m in behind.json()["read_models"].values())
    side.projections.catch_up()
    assert c.get("/readyz").status_code == 200
    assert c.get("/healthz").json() == {"status": "ok"}


def test_an_operator_makes_lists_and_revokes_tokens_shown_once(fresh: Any) -> None:
    c, _ = fresh
    operator = bearer(tokens(c)["operator"])
    made = c.post("/v1/tokens", headers=operator, json={"role": "member", "workspace": "beta", "label": "bob"})
    assert made.status_code == 201 and made.json()["token"].startswith("sl_")
    secret, token_id = made.json()["token"], made.json()["id"]
    assert c.get("/v1/workspaces/beta", headers=bearer(secret)).status_code == 200
    listed = walk(c, "/v1/tokens", operator, "id", limit=3)
    assert token_id in [t["id"] for t in listed] and secret not in json.dumps(listed)
    assert c.delete(f"/v1/tokens/{token_id}", headers=operator).json()["revoked"] is True
    assert c.get("/v1/workspaces/beta", headers=bearer(secret)).status_code == 401
    assert c.delete(f"/v1/tokens/{token_id}", headers=operator).status_code == 404
    bad = c.post("/v1/tokens", headers=operator, json={"role": "member"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


def test_a_retried_token_request_mints_one_token_and_never_stores_its_secret(fresh: Any) -> None:
    """Idempotency-Key on POST /v1/tokens: the retry answers with the same token, its secret null
    (shown once); the same key with another request is 409; a bad request stores nothing."""
    c, _ = fresh
    operator = bearer(tokens(c)["operator"])
    keyed = {**operator, "Idempotency-Key": "mint-bob"}
    body = {"role": "member", "workspace": "beta", "label": "bob"}
    first = c.post("/v1/tokens", headers=keyed, json=body)
    again = c.post("/v1/tokens", headers=keyed, json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.json() == {**first.json(), "token": None} and first.json()["token"].startswith("sl_")
    assert [t["label"] for t in walk(c, "/v1/tokens", operator, "id")].count("bob") == 1
    other = c.post("/v1/tokens", headers=keyed, json={**body, "role": "support", "workspace": None})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    bad = {**operator, "Idempotency-Key": "mint-bad"}
    assert c.post("/v1/tokens", headers=bad, json={"role": "member"}).status_code == 400
    assert c.post("/v1/tokens", headers=bad, json=body).status_code == 201  # the refusal kept nothing


def test_replay_refusals_name_the_query_fields_not_cli_flags(api: Any) -> None:
    c, support = api
    line = c.get("/v1/invoices/in_acme_0002/explain", headers=support, params={"line": 9}).json()
    assert line["detail"].startswith("line: in_acme_0002 has lines 1 to 2")
    policy = c.post("/v1/workspaces/acme/what-if", headers=support, json={"policy": {"nope": 1}}).json()
    assert policy["code"] == "invalid_request" and policy["detail"].startswith("policy: unknown key(s) nope")


def test_reads_on_either_database_see_a_write_at_its_position(book: Any, db_url: str) -> None:
    b = book("forms", "2026-04-01T00:00:00")
    b.do("acme", "add-payment-method", payment_method="pm_card_visa")
    assert b.do("acme", "subscribe", plan="pro", interval="month").ok
    position = b.ledger.recorder.max_notification_id()
    for c in client(db_url):
        support = bearer(tokens(c)["support"])
        got = c.get("/v1/workspaces/acme", headers=support, params={"min_position": position})
        assert got.json()["plan"] == "pro"
        exported = c.get("/v1/workspaces/acme/audit", headers=support, params={"format": "jsonl"}).text.splitlines()
        assert json.loads(exported[-1])["position"] == position
        assert c.get("/readyz").json()["head"] == position


def test_a_key_claimed_by_a_running_request_is_refused_to_another_until_its_process_is_gone(tmp_path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import text

    from adapters.http.idempotency import CLAIM_TIMEOUT, CLAIMED, IdempotencyStore
    from domain.clock import TestClock
    from tests.conftest import utc

    clock = TestClock(utc("2026-04-01T00:00:00"))  # pinned: a claim ages on the wall clock all the same
    store = IdempotencyStore(f"sqlite:///{tmp_path}/keys.db", clock)
    try:
        request = {"path": "/v1/tokens", "body": {"role": "support"}}
        assert store.claim("tok:op", "k", request) is None
        assert store.claim("tok:op", "k", request)["status"] == CLAIMED
        with store.tables.engine().begin() as conn:  # the first holder died a while ago
            conn.execute(text("UPDATE http_idempotency SET body = :old"),
                         {"old": (datetime.now(timezone.utc) - CLAIM_TIMEOUT - timedelta(seconds=1))
                          .strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        assert store.claim("tok:op", "k", request) is None  # taken over
        store.release("tok:op", "k")
        assert store.claim("tok:op", "k", request) is None
    finally:
        store.close()


def test_an_export_its_reader_stopped_reading_holds_no_connection_other_readers_need(api: Any) -> None:
    """A client that asks for the audit CSV and never reads it held a pooled connection for as long
    as it liked: fifteen such clients made every other tenant's reads fail. The export reads a
    page at a time, each page on a connection returned before its rows are sent."""
    c, _ = api
    projections = c.app.state.read_side.fresh(None)
    with projections.engine.connect() as conn:
        whole = list(audit_trail.rows(conn, "acme"))
    paused = audit_trail.paged(projections.engine, "acme", None, None, size=3)
    first = next(paused)
    assert projections.engine.pool.checkedout() == 0
    assert len(whole) > 6 and [first, *paused] == whole


def test_a_database_that_does_not_answer_is_503_to_try_again_not_a_bug(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c, support = api

    def pool_used_up(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out")

    monkeypatch.setattr(audit_trail, "rows", pool_used_up)
    r = TestClient(c.app, raise_server_exceptions=False).get("/v1/workspaces/acme/audit", headers=support)
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (503, "unavailable", "1")
    assert "this is a bug" not in r.json()["detail"]


def test_a_database_error_that_trying_again_cannot_mend_stays_a_logged_500(api: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    c, support = api

    def table_gone(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such table: rm_audit_trail"))

    monkeypatch.setattr(audit_trail, "rows", table_gone)
    r = TestClient(c.app, raise_server_exceptions=False).get("/v1/workspaces/acme/audit", headers=support)
    assert (r.status_code, r.json()["code"]) == (500, "internal_error") and "retry-after" not in r.headers
    assert "try again" in failures.explain(sqlalchemy.exc.TimeoutError("QueuePool limit")).message
