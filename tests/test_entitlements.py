"""R19 entitlements: what a workspace may do now (features, limits, usage, read-only storage,
webhooks), as the read model shows it and as `check-upload` / `check-feature` decide it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.app import read_models
from adapters.cli import app
from domain.entitlements import as_of, check_feature, check_upload, entitlements
from domain.errors import LedgerError
from projections.entitlements import read_entitlements
from tests.conftest import utc
from tests.support import D, VISA, forms_on, workspace_on


def now(b: Any, ws: str) -> Any:
    """What the checks decide with: the aggregate as of the clock, due boundaries applied on a copy."""
    sub = b.sub(ws)
    catalog = b.ledger.catalog_for(sub)
    return entitlements(as_of(sub, catalog, b.clock.now()), catalog)


def read_model(b: Any, ws: str) -> dict[str, Any] | None:
    with read_models(b.ledger) as projections:
        projections.catch_up()
        with projections.engine.connect() as conn:
            return read_entitlements(conn, ws)


def refusal(check: Any, *args: Any) -> str:
    with pytest.raises(LedgerError) as caught:
        check(*args)
    return caught.value.code


def test_R19_R17_features_and_webhooks_stay_until_the_boundary_then_stop(book: Any) -> None:
    b = forms_on(book, "team")
    assert b.do("ws", "change-plan", plan="pro").ok  # scheduled for May 1 (R17)
    before = now(b, "ws")
    assert before.webhooks_firing and "webhooks" in before.features and "ai_insights" in before.features
    check_feature(before, "webhooks")
    assert read_model(b, "ws")["webhooks_firing"] is True
    b.at("2026-05-01T00:00:00")
    after = now(b, "ws")
    assert (after.plan, after.webhooks_firing) == ("pro", False)
    assert {"webhooks", "ai_insights"} <= set(after.locked_features)
    assert refusal(check_feature, after, "webhooks") == "plan_locked"
    assert refusal(check_feature, after, "ai_insights") == "plan_locked"
    check_feature(after, "custom_domains")
    check_feature(after, "submissions")  # granted as submissions:1000/month, shown as a limit
    assert after.limits["submissions"] == "1000/month"
    doc = read_model(b, "ws")
    assert doc == after.as_dict()
    assert (doc["plan"], doc["webhooks_firing"], doc["limits"]["storage_gb"]) == ("pro", False, 10)


def test_R19_storage_over_the_new_limit_is_read_only_and_uploads_are_refused(book: Any) -> None:
    b = forms_on(book, "team")
    assert b.do("ws", "report-storage", gb="8").ok
    assert b.do("ws", "change-plan", plan="pro").ok  # fits now (R6)
    assert b.do("ws", "report-storage", gb="40").ok  # then grows before the boundary
    check_upload(now(b, "ws"), D("60"))
    assert refusal(check_upload, now(b, "ws"), D("60.5")) == "storage_limit_exceeded"
    b.at("2026-05-01T00:00:00")
    after = now(b, "ws")
    assert (after.storage_read_only, after.storage_limit_gb, after.usage["storage_gb"]) == (True, 10, "40")
    assert refusal(check_upload, after, D("0.1")) == "storage_limit_exceeded"
    assert read_model(b, "ws")["storage_read_only"] is True
    assert b.do("ws", "report-storage", gb="9.5").ok  # files deleted: writable again
    check_upload(now(b, "ws"), D("0.5"))
    assert refusal(check_upload, now(b, "ws"), D("0.6")) == "storage_limit_exceeded"
    assert read_model(b, "ws")["storage_read_only"] is False


def test_R19_a_check_applies_a_boundary_passed_before_anything_recorded_it(book: Any) -> None:
    b = forms_on(book, "team")
    assert b.do("ws", "change-plan", plan="pro").ok
    version = b.sub("ws").version
    b.clock.move_to(utc("2026-05-02T00:00:00"))  # no advance: nothing recorded the boundary
    assert refusal(check_feature, now(b, "ws"), "webhooks") == "plan_locked"
    assert b.sub("ws").version == version, "a check records nothing"
    assert read_model(b, "ws")["webhooks_firing"] is True, "the read model is as of the last event"


def test_R11_an_upgrade_unlocks_features_and_raises_limits_at_once(book: Any) -> None:
    b = forms_on(book, "pro")
    assert refusal(check_feature, now(b, "ws"), "webhooks") == "plan_locked"
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="team").ok
    check_feature(now(b, "ws"), "webhooks")
    doc = read_model(b, "ws")
    assert (doc["webhooks_firing"], doc["limits"]["storage_gb"], doc["limits"]["seats"]) == (True, 100, 10)


def test_R19_R22_R18_limits_and_usage_follow_seats_add_ons_and_operations(book: Any) -> None:
    b = workspace_on(book, "team", seats=5)
    assert b.do("ws", "set-storage-addon", addon="storage-100gb").ok
    assert b.do("ws", "set-members", members=4).ok
    doc = read_model(b, "ws")
    assert doc["limits"]["seats"] == 5 and doc["limits"]["storage_gb"] == 200
    assert doc["usage"]["members"] == 4 and doc["usage"]["ai_credits"] == 500
    assert doc["webhooks_firing"] is False and "sso" in doc["locked_features"]
    ops = book("operations")
    assert ops.do("o", "add-payment-method", payment_method=VISA).ok
    assert ops.do("o", "subscribe", plan="core", tier=10000).ok
    assert ops.do("o", "record-usage", operations=2500).ok
    doc = read_model(ops, "o")
    assert (doc["limits"]["operations_per_month"], doc["limits"]["teams"]) == (10000, 1)
    assert doc["usage"]["operations_remaining"] == 7500


def test_R19_without_a_subscription_or_after_cancellation_nothing_is_granted(book: Any) -> None:
    b = forms_on(book, "pro")
    assert b.do("ws", "cancel").ok
    check_feature(now(b, "ws"), "file_uploads")  # paid until the period ends
    b.at("2026-05-01T00:00:00")
    gone = now(b, "ws")
    assert (gone.status, gone.features, gone.webhooks_firing) == ("canceled", [], False)
    assert refusal(check_feature, gone, "forms") == "plan_locked"
    assert refusal(check_upload, gone, D("1")) == "storage_limit_exceeded"
    assert read_model(b, "ws")["features"] == []


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.db = f"sqlite:///{tmp_path}/cli.db"

    def __call__(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--db", self.db, *args])
        assert "Traceback" not in result.output, result.output
        return result

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self("--json", *args)
        return result.exit_code, json.loads(result.stdout)


def test_R19_the_cli_checks_answer_ok_or_refuse_and_record_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert cli("add-payment-method", "ws1", "--payment-method", VISA).exit_code == 0
    assert cli("subscribe", "ws1", "--plan", "pro").exit_code == 0
    assert cli("report-storage", "ws1", "--gb", "8").exit_code == 0
    version = cli.json("show", "ws1")[1]["version"]
    code, out = cli.json("entitlements", "ws1")
    assert (code, out["plan"], out["webhooks_firing"], out["usage"]["storage_gb"]) == (0, "pro", False, "8")
    assert cli.json("check-upload", "ws1", "--gb", "2")[0] == 0
    code, out = cli.json("check-upload", "ws1", "--gb", "2.5")
    assert (code, out["error"]["code"]) == (1, "storage_limit_exceeded")
    assert cli.json("check-feature", "ws1", "custom_domains") == (
        0, {"ok": True, "workspace": "ws1", "feature": "custom_domains", "plan": "pro"})
    code, out = cli.json("check-feature", "ws1", "webhooks")
    assert (code, out["error"]["code"], out["error"]["message"]) == (1, "plan_locked", "webhooks is not included in Pro")
    code, out = cli.json("check-feature", "ws1", "nonsense_feature")
    assert (code, out["error"]["code"]) == (2, "invalid_request") and "check its spelling" in out["error"]["message"]
    assert cli("add-payment-method", "ws2", "--payment-method", VISA).exit_code == 0  # no subscription
    code, out = cli.json("check-feature", "ws2", "submissions")  # sold as "submissions:<limit>"
    assert (code, out["error"]["code"]) == (1, "plan_locked"), out
    assert cli.json("check-feature", "ws1", "submissions")[0] == 0, "Pro sells submissions:1000/month"
    text = cli("check-upload", "ws1", "--gb", "1")
    assert text.exit_code == 0 and text.stdout.startswith("ok: ws1 may upload 1 GB (2 of 10 GB free)")
    assert "webhooks: not firing" in cli("entitlements", "ws1").stdout
    assert cli.json("check-upload", "ws1", "--gb", "１")[0] == 2
    assert cli.json("check-upload", "ws1", "--gb", "-1")[0] == 2
    assert cli.json("check-feature", "nobody", "webhooks")[1]["error"]["code"] == "not_found"
    assert cli.json("entitlements", "nobody")[0] == 1
    assert cli.json("show", "ws1")[1]["version"] == version
