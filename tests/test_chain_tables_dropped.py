"""The event chain's tables dropped by hand from a store that is set up and current (its
`subledger_meta` kept): `audit verify` and every write said `unavailable`, "database error: no
such table" (exit 3), as if the database were down. It is a broken chain (docs/audit.md)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from tests.support import VISA
from tests.test_tamper_evidence import StoredEvents, stored  # noqa: F401 (a fixture)

CLOCK = {"SUBLEDGER_TEST_CLOCK": "2026-04-01T00:00:00Z"}


@pytest.mark.parametrize("command", [["audit", "verify"], ["set-members", "acme", "--members", "2"]])
def test_dropped_chain_tables_are_named_as_a_broken_chain(db_url: str, stored: StoredEvents,  # noqa: F811
                                                          command: list[str]) -> None:
    run = CliRunner(env=CLOCK)
    assert run.invoke(app, ["--db", db_url, "add-payment-method", "acme", "--payment-method", VISA]).exit_code == 0
    assert run.invoke(app, ["--db", db_url, "subscribe", "acme", "--plan", "pro"]).exit_code == 0
    for table in (f"{stored.table}_chain", f"{stored.table}_chain_meta"):
        stored.sql(f"DROP TABLE {table}")
    result = run.invoke(app, ["--db", db_url, *command])
    assert result.exit_code == 1, result.output
    assert "its event chain table" in result.output and "is missing, dropped by hand" in result.output
    assert "[event_chain_broken]" in result.output
