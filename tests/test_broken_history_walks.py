"""One workspace whose history was broken by hand (an event deleted in the database) never hides
the others from a command that walks every workspace: each lists, resolves, advances and
verifies the others, names the broken one on stderr (`failed`/`unverified` under --json) and
exits 1 (docs/audit.md). On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from tests.conftest import Book
from tests.support import VISA
from tests.test_tamper_evidence import StoredEvents

THREE_DS = "pm_card_authenticationRequired"
BROKEN = "[event_chain_broken]"


@pytest.fixture
def broken(book: Any, db_url: str) -> Book:
    """acme paid for Pro and set its members, then lost its PaymentSucceeded to a hand edit; bolt is on Pro (renews
    on May 1); cold's subscription waits for 3-D Secure. No `advance` ran before the edit."""
    b: Book = book("forms")
    for ws, card in (("acme", VISA), ("bolt", VISA), ("cold", THREE_DS)):
        b.do(ws, "add-payment-method", payment_method=card)
        b.do(ws, "subscribe", plan="pro", interval="month")
    b.do("acme", "set-members", members=2)  # the deleted event is not acme's last
    stored = StoredEvents(db_url)
    stored.delete("acme", stored.version_of("acme", "PaymentSucceeded"))
    stored.engine.dispose()
    return b


def cli(db_url: str, *args: str, at: str = "2026-04-01T06:00:00Z") -> Any:
    result = CliRunner(env={"SUBLEDGER_TEST_CLOCK": at}).invoke(app, ["--db", db_url, *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_payments_pending_lists_the_other_workspaces_charges_and_names_the_broken_one(
        broken: Book, db_url: str) -> None:
    """It stopped at acme: cold's charge awaiting the customer went unlisted."""
    result = cli(db_url, "payments", "pending")
    assert result.exit_code == 1, result.output
    assert "cold: in_cold_0001 19.00 USD" in result.stdout and "waiting for the customer" in result.stdout
    assert "acme: not listed: the stored events of acme go from version" in result.stderr
    assert BROKEN in result.stderr
    out = json.loads(cli(db_url, "--json", "payments", "pending").stdout)
    assert (out["ok"], [r["workspace"] for r in out["pending"]]) == (False, ["cold"])
    assert out["failed"]["acme"]["code"] == "event_chain_broken"


def test_payments_resolve_records_the_other_workspaces_outcomes(broken: Book, db_url: str) -> None:
    """After a crash, `payments resolve` is what records what the gateway did: one broken
    workspace left every other charge unrecorded."""
    (charge,) = broken.sub("cold").pending_charges.values()
    broken.payments.confirm(charge["charge_key"])  # the customer completed 3-D Secure; the ledger did not hear
    result = cli(db_url, "payments", "resolve", at="2026-05-01T06:00:00Z")  # acme's renewal is due: it is visited
    assert result.exit_code == 1, result.output
    assert "cold: Subscribed, InvoiceIssued, PaymentSucceeded" in result.stdout  # the money moved: recorded
    assert "acme: not resolved: " in result.stderr and BROKEN in result.stderr
    assert "in_cold_0001" not in broken.sub("cold").pending_charges


def test_advance_renews_the_others_on_the_first_run_and_names_the_broken_one_every_round(
        broken: Book, db_url: str) -> None:
    """The first `advance` builds the due index by loading each workspace: acme stopped it, so
    no workspace renewed. Now acme is due at every round until mended, and named each time."""
    first = cli(db_url, "advance", at="2026-05-01T06:00:00Z")
    assert first.exit_code == 1, first.output
    assert "bolt: PeriodRenewed, InvoiceIssued, ChargeRequested, PaymentSucceeded" in first.stdout
    assert "acme: not advanced: " in first.stderr and BROKEN in first.stderr
    again = cli(db_url, "--json", "advance", at="2026-05-02T06:00:00Z")
    assert again.exit_code == 1, again.output
    assert list(json.loads(again.stdout)["failed"]) == ["acme"]


def test_replay_verify_verifies_the_other_workspaces_and_names_the_one_it_could_not(
        broken: Book, db_url: str) -> None:
    result = cli(db_url, "replay", "verify")
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("verify: 1 invoice of 2 workspaces recomputed, all as recorded")
    assert "acme: not verified: " in result.stderr and BROKEN in result.stderr
    out = json.loads(cli(db_url, "replay", "verify", "--json").stdout)
    assert (out["ok"], out["invoices"], list(out["unverified"])) == (False, 1, ["acme"])


def test_a_what_if_over_every_workspace_skips_the_broken_one_saying_why(broken: Book, db_url: str) -> None:
    result = cli(db_url, "replay", "what-if", "--all", "--policy", "proration=second")
    assert result.exit_code == 0, result.output
    assert "bolt: 1 invoice" in result.stdout and "skipped acme: its history cannot be read" in result.stdout


def test_a_ledger_indexed_for_the_first_time_names_the_broken_workspace_at_every_round(
        broken: Book, db_url: str) -> None:
    """A ledger recorded before the due index existed has no rows: the first `advance` loads each
    workspace to index it. acme's next due instant cannot be read, so it is due at once, and
    named until mended, rather than never visited again."""
    stored = StoredEvents(db_url)
    stored.sql("DELETE FROM {t}_due")
    stored.sql("DELETE FROM {t}_chain_meta WHERE name = 'due_index'")
    stored.engine.dispose()
    for at in ("2026-04-01T07:00:00Z", "2026-04-01T08:00:00Z"):
        result = cli(db_url, "--json", "advance", at=at)
        assert result.exit_code == 1, result.output
        assert list(json.loads(result.stdout)["failed"]) == ["acme"]
