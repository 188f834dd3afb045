"""`subledger replay ...` in process: explain, as-of, what-if, verify and rebuild, their
formats and exit codes (0 done, 1 a difference or a refusal, 2 invalid input)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from adapters.settings import eventsourcing_env
from projections import registry
from projections.runner import Projections
from tests.support import VISA, catalog_variant, forms_on
from tests.test_tamper_evidence import StoredEvents


@pytest.fixture
def ledger_url(book: Any, db_url: str) -> str:
    """acme: Pro from Apr 1, Team from Apr 11 (R13), renewed May 1; read models current."""
    b = forms_on(book, "pro", ws="acme")
    b.at("2026-04-11T00:00:00").do("acme", "change-plan", plan="team")
    b.do("acme", "set-members", members=2)
    b.at("2026-05-02T00:00:00")
    with Projections(eventsourcing_env(db_url), source=b.ledger) as p:
        p.catch_up()
    return db_url


def replay(url: str, *args: str, json_output: bool = False) -> Any:
    result = CliRunner().invoke(app, ["--db", url, *(["--json"] if json_output else []), "replay", *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_explain_prints_text_markdown_and_json(ledger_url):
    out = replay(ledger_url, "explain", "in_acme_0002")
    assert out.exit_code == 0
    assert "Unused time on Pro (monthly) = 19.00 x 1 x 20/30 days = 12.666667 -> 12.67 (credit, R13)" in out.output
    md = replay(ledger_url, "explain", "in_acme_0002", "--format", "md").output
    assert md.startswith("**Invoice `in_acme_0002`**") and "| | **Due** | **20.00** | | |" in md
    doc = json.loads(replay(ledger_url, "explain", "in_acme_0002", "--line", "2", "--format", "json").output)
    assert [(line["n"], line["amount"]) for line in doc["lines"]] == [(2, "32.67")]
    assert replay(ledger_url, "explain", "in_acme_0099").exit_code == 1
    assert replay(ledger_url, "explain", "in_acme_0002", "--format", "pdf").exit_code == 2


def test_R12_explain_prints_a_declined_purchase_s_void_invoice_and_why_it_is_void(book, db_url):
    b = forms_on(book, "pro", ws="acme")
    b.at("2026-04-11T00:00:00").do("acme", "add-payment-method", payment_method="pm_card_chargeDeclined")
    assert b.do("acme", "change-plan", plan="team").error.code == "payment_failed"
    out = replay(db_url, "explain", "in_acme_0002")
    assert out.exit_code == 0, out.output
    assert "Invoice in_acme_0002 (upgrade) for workspace acme, VOID, requested 2026-04-11T00:00:00Z" in out.output
    assert "declined on 2026-04-11T00:00:00Z (card_declined: Your card was declined.)" in out.output
    assert "Team (monthly), remaining time = 49.00 x 1 x 20/30 days = 32.666667 -> 32.67 (R11, R13)" in out.output
    assert "owed 0.00: void, its charge was declined (R12)" in out.output


def test_as_of_by_instant_version_and_what_was_recorded(ledger_url):
    doc = json.loads(replay(ledger_url, "as-of", "acme", "--at", "2026-04-10T00:00:00Z", json_output=True).output)
    assert (doc["state"]["plan"], doc["upcoming_renewal"]["amount_due"]) == ("pro", "19.00")
    text_out = replay(ledger_url, "as-of", "acme", "--at", "2026-04-20").output
    assert "team (monthly)" in text_out and "renewal forecast then: 49.00 USD on 2026-05-01T00:00:00Z" in text_out
    first = json.loads(replay(ledger_url, "as-of", "acme", "--version", "2", "--format", "json").output)
    assert first["version"] == 2 and first["state"]["plan"] is None
    assert replay(ledger_url, "as-of", "acme").exit_code == 2
    assert replay(ledger_url, "as-of", "acme", "--at", "yesterday").exit_code == 2
    assert replay(ledger_url, "as-of", "nobody", "--version", "1").exit_code == 1


def test_R19_as_of_calls_a_final_invoice_forecast_a_final_invoice(book, db_url, tmp_path):
    """A canceled workspace with operations to bill was told it renews."""
    b = book(catalog_variant(tmp_path, "operations", "ops-bill", overage='"bill"'))
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="core", tier=10000).ok
    assert b.do("ws", "record-usage", operations=12_000).ok
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "cancel").ok
    out = replay(db_url, "as-of", "ws", "--at", "2026-04-12T00:00:00Z").output
    assert "final invoice, as billing ends, forecast then: 2.12 USD on 2026-05-01T00:00:00Z" in out
    assert "renewal" not in out


def test_what_if_reports_invoice_by_invoice_and_writes_a_csv(ledger_url, tmp_path):
    path = tmp_path / "team59.toml"
    forms = resources.files("domain.catalogs").joinpath("forms.toml").read_text("utf-8")
    path.write_text(forms.replace('month = "49.00"', 'month = "59.00"').replace('version = "2026-11-23"',
                                                                                'version = "2027-01-01"'))
    out = replay(ledger_url, "what-if", "--all", "--catalog", str(path), "--csv", str(tmp_path / "diff.csv"))
    assert out.exit_code == 0, out.output
    assert "in_acme_0002 upgrade 2026-04-11T00:00:00Z: changed, due 20.00 -> 26.66 (6.66)" in out.output
    assert "recorded: 49.00 x 1 = 49.00" in out.output and "what_if: 59.00 x 1 = 59.00" in out.output
    assert "total: 2 of 3 invoices would differ; due 88.00 -> 104.66 (16.66)" in out.output
    rows = list(csv.DictReader((tmp_path / "diff.csv").open()))
    assert [r["amount_due_delta"] for r in rows] == ["0.00", "6.66", "10.00"]
    same = replay(ledger_url, "what-if", "acme", "--catalog", "forms", "--format", "csv").output
    assert [r["status"] for r in csv.DictReader(io.StringIO(same))] == ["same"] * 3
    doc = json.loads(replay(ledger_url, "what-if", "acme", "--policy", "proration=second", "--format", "json").output)
    assert doc["summary"]["differences"] == 0
    assert replay(ledger_url, "what-if", "acme").exit_code == 2
    assert replay(ledger_url, "what-if", "acme", "--policy", "rounding=up").exit_code == 2
    assert replay(ledger_url, "what-if", "acme", "--all", "--catalog", "forms").exit_code == 2
    assert replay(ledger_url, "what-if", "acme", "--catalog", "nope.toml").exit_code == 2


def test_verify_passes_on_what_was_recorded(ledger_url):
    out = replay(ledger_url, "verify")
    assert out.exit_code == 0 and "3 invoices of 1 workspace recomputed, all as recorded" in out.output
    doc = json.loads(replay(ledger_url, "verify", "--workspace", "acme", "--format", "json").output)
    assert (doc["ok"], doc["invoices"], doc["differences"]) == (True, 3, [])


def live_table(stored: StoredEvents, family: str) -> str:
    with stored.engine.connect() as conn:
        return f"rm_{family}_{registry.active(conn)[family].tag}"


def test_rebuild_verify_finds_a_live_row_that_drifted_and_swaps_in_the_events_truth(ledger_url):
    assert replay(ledger_url, "rebuild", "--verify").exit_code == 0
    stored = StoredEvents(ledger_url)
    try:
        stored.sql(f'UPDATE "{live_table(stored, "plan_state")}" SET members = 9 WHERE workspace = \'acme\'')
        out = replay(ledger_url, "rebuild", "--verify", "--projection", "plan_state", "--format", "json")
        assert out.exit_code == 1
        report = json.loads(out.output)
        assert list(report["rebuilt"]) == ["plan_state"]
        table = report["verify"]["plan_state"]["tables"]["plan_state"]
        assert (table["changed"], table["only_live"], table["only_rebuilt"]) == (1, 0, 0)
        assert table["examples"][0]["key"] == ["acme"] and table["examples"][0]["columns"]["members"] == [9, 2]
        again = replay(ledger_url, "rebuild", "--verify", "--projection", "plan_state")
        assert again.exit_code == 0 and "identical to the live tables" in again.output
        assert replay(ledger_url, "rebuild", "--projection", "nope").exit_code == 2
    finally:
        stored.engine.dispose()


def test_rebuild_refuses_a_broken_event_chain_unless_forced(ledger_url):
    stored = StoredEvents(ledger_url)
    try:
        version = stored.version_of("acme", "PaymentSucceeded")
        stored.edit("acme", version, lambda doc: doc["amount"].update(_data_="1.90"))
        refused = replay(ledger_url, "rebuild", "--verify")
        assert refused.exit_code == 1 and "event_chain_broken" in refused.output
        forced = replay(ledger_url, "rebuild", "--verify", "--force", "--format", "json")
        assert forced.exit_code == 1  # rebuilt from the altered payment: the journal now differs
        report = json.loads(forced.output)
        assert not report["verify"]["journal"]["ok"] and report["verify"]["plan_state"]["ok"]
        assert Decimal(report["verify"]["journal"]["tables"]["journal"]["examples"][0]["columns"]["amount"][1]) \
            in (Decimal("1.90"), Decimal("-1.90"))
    finally:
        stored.engine.dispose()


def test_replay_rebuild_waits_for_a_rebuild_another_process_is_running(ledger_url):
    """As `project rebuild` does: two rebuilds at once would swap and drop each other's tables."""
    import threading

    from adapters.schema import schema_lock

    assert replay(ledger_url, "rebuild").exit_code == 0  # set up: no later rebuild needs the lock to start
    done: list[Any] = []
    with schema_lock(eventsourcing_env(ledger_url)):  # another process's rebuild
        waiting = threading.Thread(target=lambda: done.append(replay(ledger_url, "rebuild", "--verify")))
        waiting.start()
        waiting.join(3)
        assert not done, "it rebuilt while another rebuild held the lock"
    waiting.join(60)
    assert done and done[0].exit_code == 0, done and done[0].output


@pytest.mark.parametrize("args", [
    ["as-of", "acme", "--at", "0001-01-01T00:00:00+01:00"],  # was an OverflowError, exit 3
    ["as-of", "acme", "--at", "9999-12-31T23:59:59-01:00"],
    ["what-if", "acme", "--policy", "proration=second", "--from", "0001-01-01T00:00:00+01:00"],
    ["as-of", "acme' OR 1=1--", "--at", "2026-04-20T00:00:00Z"],  # was not_found, exit 1
    ["what-if", "x'y", "--policy", "proration=second"],
    ["verify", "--workspace", "x'y"],
    ["as-of", "acme", "--at", ""],  # printed the latest state, exit 0
])
def test_replay_refuses_an_instant_out_of_range_or_a_malformed_workspace_id_as_bad_input(ledger_url, args):
    result = replay(ledger_url, *args)
    assert result.exit_code == 2 and "[invalid_request]" in result.output, result.output
