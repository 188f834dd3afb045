"""Scenario files, the black-box contract of docs/scenarios.md: exit codes, expect semantics,
invalid files, and the example files in tests/scenarios/ (which double as documentation)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.app import build_ledger
from adapters.demo import demo_file
from adapters.scenario import partial_mismatches, run_scenario

EXAMPLES = sorted((Path(__file__).parent / "scenarios").glob("*.json"))
ADMIN = {"id": "alice", "role": "admin"}


def write(tmp_path: Path, data: Any, name: str = "s.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def step(at: str, do: str, workspace: str | None = "acme", **extra: Any) -> dict[str, Any]:
    out = {"at": at, "do": do, "actor": ADMIN, **extra}
    if workspace is not None:
        out["workspace"] = workspace
    return out


def run(path: Path, db: str | None = None) -> tuple[list[dict[str, Any]], int, str]:
    err = io.StringIO()
    outputs, code = run_scenario(path, db, stderr=err)
    return outputs, code, err.getvalue()


SUBSCRIBED = [
    step("2026-04-01T00:00:00Z", "add-payment-method", **{"with": {"payment_method": "pm_card_visa"}}),
    step("2026-04-01T00:00:00Z", "subscribe", **{"with": {"plan": "pro"}}),
]


@pytest.mark.parametrize("path", EXAMPLES + [demo_file()], ids=lambda p: p.name)
def test_example_scenarios_hold(path: Path) -> None:
    outputs, code, err = run(path)
    assert code == 0, err
    assert outputs and all(o["expect_failures"] == [] for o in outputs)


def test_R13_R16_R18_demo_carries_the_seed_numbers() -> None:
    outputs, code, _ = run(demo_file())
    assert code == 0
    amounts = {line["amount"] for o in outputs if o["invoice"] for line in o["invoice"]["lines"]}
    assert {"-12.67", "32.67", "-121.44"} <= amounts
    assert outputs[-1]["state"]["operations_remaining"] == 50_000


def test_scenario_runs_on_sqlite_and_postgres(db_url: str) -> None:
    outputs, code, err = run(Path(__file__).parent / "scenarios" / "forms_upgrade.json", db_url)
    assert code == 0, err
    ledger = build_ledger(db_url)
    try:
        assert outputs[-1]["workspace"] in ledger.workspaces()
    finally:
        ledger.close()


def test_every_run_starts_on_a_fresh_database(tmp_path: Path) -> None:
    path = write(tmp_path, {"catalog": "forms", "steps": [
        {**SUBSCRIBED[0], "expect": {"events": ["WorkspaceRegistered", "PaymentMethodAdded"]}}]})
    assert run(path)[1] == 0
    assert run(path)[1] == 0


def test_a_failing_expect_exits_1_runs_every_step_and_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, {"catalog": "forms", "steps": [
        SUBSCRIBED[0],
        {**SUBSCRIBED[1], "expect": {"invoice": {"amount_due": 19}, "state": {"plan": "team", "nope": 1}}},
        step("2026-04-02T00:00:00Z", "show", expect={"state": {"plan": "pro"}}),
    ]})
    outputs, code, err = run(path)
    assert code == 1
    assert len(outputs) == 3
    failures = outputs[1]["expect_failures"]
    assert 'invoice.amount_due: expected 19, got "19.00" (amounts are strings, e.g. "20.00")' in failures
    assert 'state.plan: expected "team", got "pro"' in failures
    assert any(f.startswith("state.nope: no such field") for f in failures)
    assert outputs[2]["expect_failures"] == []
    assert "step 2 (subscribe)" in err


def test_invoice_lines_must_list_every_line() -> None:
    actual = {"lines": [{"kind": "plan_credit", "amount": "-12.67"}, {"kind": "plan_charge", "amount": "32.67"}]}
    assert partial_mismatches({"lines": [{"amount": "-12.67"}, {"amount": "32.67"}]}, actual, "invoice") == []
    assert partial_mismatches({"lines": [{"amount": "-12.67"}]}, actual, "invoice")[0].startswith(
        "invoice.lines: expected 1 item(s), got 2")
    assert partial_mismatches({"x": True}, {"x": 1}, "s") == ["s.x: expected true, got 1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"catalog": "forms", "steps": [', "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ({"steps": [step("2026-04-01", "show")]}, "missing 'catalog'"),
        ({"catalog": "forms"}, "'steps' must be a non-empty list"),
        ({"catalog": "forms", "steps": []}, "'steps' must be a non-empty list"),
        ({"catalog": "forms", "stepz": [], "steps": [step("2026-04-01", "show")]}, "unknown top-level key(s): stepz"),
        ({"catalog": "gold", "steps": [step("2026-04-01", "show")]}, "catalog: unknown catalog 'gold'"),
        ({"catalog": "gold.toml", "steps": [step("2026-04-01", "show")]}, "gold.toml: no such file"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "fly")]}, "step 1: unknown command 'fly'"),
        ({"catalog": "forms", "steps": [{"do": "show", "workspace": "a"}]}, "step 1: missing 'at'"),
        ({"catalog": "forms", "steps": [step("yesterday", "show")]}, "step 1: at: 'yesterday' is not ISO-8601"),
        ({"catalog": "forms", "steps": [step("2026-04-02", "show"), step("2026-04-01", "show")]},
         "step 2: at 2026-04-01T00:00:00Z is before 2026-04-02T00:00:00Z"),
        ({"catalog": "forms", "start": "2026-05-01", "steps": [step("2026-04-01", "show")]}, "step 1: at"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "show", workspace=None)]}, "step 1: missing 'workspace'"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "show", workspace="ws'; DROP TABLE x;--")]},
         "step 1: workspace: \"ws'; DROP TABLE x;--\" is not a valid id"),
        ({"catalog": "forms", "steps": [{**step("2026-04-01", "show"), "actor": {"id": "x", "role": "king"}}]},
         "step 1: actor.role: must be 'owner'"),
        ({"catalog": "forms", "steps": [{**step("2026-04-01", "show"), "actor": {"id": "x", "role": "system"}}]},
         "step 1: actor.role must be one of"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "show", expect={"okay": True})]},
         "step 1: unknown expect key(s): okay"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "show", expect={"events": "Subscribed"})]},
         "step 1: expect.events must be a list"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "preview", **{"with": {"plan": "team"}})]},
         "step 1: preview needs with.do"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "advance", **{"with": {"x": 1}})]},
         "step 1: advance takes no arguments"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "cancel", channel="fax")]}, "step 1: channel must be"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "cancel", idempotency_key="a b")]},
         "step 1: idempotency_key"),
        ({"catalog": "forms", "steps": [step("2026-04-01", "cancel", colour="red")]}, "step 1: unknown key(s): colour"),
    ],
)
def test_an_invalid_file_exits_2_naming_the_problem(tmp_path: Path, content: Any, message: str) -> None:
    outputs, code, err = run(write(tmp_path, content))
    assert (outputs, code) == ([], 2)
    assert message in err
    assert "Traceback" not in err


def test_a_broken_catalog_file_is_an_invalid_scenario(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('id = "x"\nversion = "1"\nname = "X"\ncurrency = "XXX"\nplans = []\n')
    outputs, code, err = run(write(tmp_path, {"catalog": "bad.toml", "steps": [step("2026-04-01", "show")]}))
    assert code == 2
    assert "unsupported currency 'XXX'" in err


def test_an_invalid_file_records_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/kept.db"
    path = write(tmp_path, {"catalog": "forms", "steps": [SUBSCRIBED[0], step("2026-04-02", "fly")]})
    assert run(path, db)[1] == 2
    ledger = build_ledger(db)
    try:
        assert ledger.workspaces() == []
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"seats": -3}, "invalid_request"),
        ({"seats": 2.5}, "invalid_request"),
        ({"seats": "3"}, "invalid_request"),
        ({"seats": 10**30}, "invalid_request"),
        ({"plan": "platinum"}, "unknown_plan"),
        ({"plan": "pro'; DROP TABLE x;--"}, "invalid_request"),
        ({"plan": "team", "price": "0.01"}, "invalid_request"),
    ],
)
def test_bad_arguments_are_refused_steps_that_record_nothing(tmp_path: Path, args: dict[str, Any], code: str) -> None:
    args = {"plan": "team", **args} if "plan" not in args else args
    path = write(tmp_path, {"catalog": "workspace", "steps": [
        step("2026-04-01", "add-payment-method", **{"with": {"payment_method": "pm_card_visa"}}),
        step("2026-04-01", "subscribe", **{"with": {"plan": "team", "seats": 2}}),
        step("2026-04-02", "change-plan", **{"with": args}, expect={"ok": False, "error": code, "events": []}),
    ]})
    outputs, exit_code, err = run(path)
    assert exit_code == 0, err
    assert outputs[2]["state"]["version"] == outputs[1]["state"]["version"]


def test_R25_preview_records_nothing_and_is_the_invoice(tmp_path: Path) -> None:
    path = write(tmp_path, {"catalog": "forms", "steps": [
        *SUBSCRIBED,
        step("2026-04-11", "preview", **{"with": {"do": "change-plan", "plan": "team"}}),
        step("2026-04-11", "change-plan", **{"with": {"plan": "team"}}),
    ]})
    outputs, code, _ = run(path)
    assert code == 0
    preview, applied = outputs[2], outputs[3]
    assert preview["state"]["plan"] == "pro"
    assert preview["state"]["version"] == outputs[1]["state"]["version"]
    assert ["ChargeRequested", *preview["events"]] == applied["events"]
    assert preview["invoice"] == applied["invoice"]


def test_idempotency_keys_replay_or_conflict(tmp_path: Path) -> None:
    upgrade = step("2026-04-11", "change-plan", idempotency_key="up-1", **{"with": {"plan": "team"}})
    path = write(tmp_path, {"catalog": "forms", "steps": [
        *SUBSCRIBED, upgrade, upgrade,
        {**upgrade, "with": {"plan": "pro", "interval": "year"}, "expect": {"error": "idempotency_conflict"}},
    ]})
    outputs, code, _ = run(path)
    assert code == 0
    first, again = outputs[2], outputs[3]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["events"] == first["events"] and again["invoice"] == first["invoice"]
    assert again["state"]["version"] == first["state"]["version"]


def test_R17_advance_records_what_fell_due_for_every_workspace(tmp_path: Path) -> None:
    path = write(tmp_path, {"catalog": "forms", "steps": [
        *SUBSCRIBED,
        step("2026-04-02", "add-payment-method", workspace="beta", **{"with": {"payment_method": "pm_card_visa"}}),
        step("2026-04-02", "subscribe", workspace="beta", **{"with": {"plan": "team"}}),
        step("2026-05-01T00:00:00Z", "advance", workspace=None,
             expect={"due_events": ["PeriodRenewed", "InvoiceIssued", "ChargeRequested", "PaymentSucceeded"]}),
        step("2026-05-02T00:00:00Z", "show", workspace="beta",
             expect={"due_events": ["PeriodRenewed", "InvoiceIssued", "ChargeRequested", "PaymentSucceeded"],
                     "invoice": {"purpose": "renewal", "amount_due": "49.00"},
                     "state": {"period_end": "2026-06-02T00:00:00Z"}}),
    ]})
    outputs, code, err = run(path)
    assert code == 0, err
    assert outputs[4]["state"] is None
