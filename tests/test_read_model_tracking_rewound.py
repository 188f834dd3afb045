"""A read model's tracking row rewound or removed by hand: its rows already hold the events it
would take again. Every read then failed with the database's raw UNIQUE-constraint message and
the INSERT statement (exit 3, `unavailable`), and `audit verify` printed the same dump. It is
`read_models_damaged` (exit 1), named in words with what mends it: `project rebuild`."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from adapters.cli import app
from tests.support import VISA
from tests.test_tamper_evidence import StoredEvents, stored  # noqa: F401 (a fixture)

CLOCK = {"SUBLEDGER_TEST_CLOCK": "2026-04-01T00:00:00Z"}


@pytest.mark.parametrize("tamper", ["DELETE FROM {tracking}", "UPDATE {tracking} SET notification_id = 3"])
def test_rewound_tracking_is_named_and_mended_by_rebuild(db_url: str, stored: StoredEvents,  # noqa: F811
                                                        tamper: str) -> None:
    run = CliRunner(env=CLOCK)
    assert run.invoke(app, ["--db", db_url, "add-payment-method", "acme", "--payment-method", VISA]).exit_code == 0
    assert run.invoke(app, ["--db", db_url, "subscribe", "acme", "--plan", "pro"]).exit_code == 0
    assert run.invoke(app, ["--db", db_url, "audit", "verify"]).exit_code == 0
    ((tag,),) = stored.sql("SELECT tag FROM rm_registry WHERE projection = 'audit_trail'")
    with stored.engine.begin() as conn:
        conn.execute(text(tamper.format(tracking=f"rm_audit_trail_{tag}_tracking")))

    for command in (["show", "acme"], ["audit", "verify"]):
        result = run.invoke(app, ["--db", db_url, *command])
        assert result.exit_code == 1, result.output
        assert "read_models_damaged" in result.output
        assert "tracking row was rewound or removed by hand" in result.output
        assert "subledger project rebuild" in result.output
        assert "INSERT INTO" not in result.output and "UNIQUE" not in result.output.upper()

    assert run.invoke(app, ["--db", db_url, "project", "rebuild"]).exit_code == 0
    assert run.invoke(app, ["--db", db_url, "audit", "verify"]).exit_code == 0
    shown = run.invoke(app, ["--db", db_url, "show", "acme"])
    assert shown.exit_code == 0 and "pro" in shown.output
