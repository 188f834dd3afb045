"""A stored event's topic changed by hand (docs/audit.md). The library imports whatever module a
stored topic names and reads the payload as that class: another event class failed deep in
the fold (`internal_error`, HTTP 500), and any installed module was imported. Only the
ledger's own event classes are resolved; a load that fails checks the workspace's hash chain
and names where it was changed (`event_chain_broken`, exit 1)."""

from __future__ import annotations

import sys
from typing import Any

from typer.testing import CliRunner

from adapters.cli import app
from tests.test_tamper_evidence import StoredEvents, paid, stored  # noqa: F401 (a fixture)

CLOCK = {"SUBLEDGER_TEST_CLOCK": "2026-04-02T00:00:00Z"}


def retopic(stored: StoredEvents, workspace: str, event_type: str, topic: str) -> int:  # noqa: F811
    version = stored.version_of(workspace, event_type)
    stored.sql("UPDATE {t} SET topic = :topic WHERE originator_id = :o AND originator_version = :v",
               topic=topic, o=stored.key(workspace), v=version)
    return version


def test_an_event_made_to_read_as_another_class_is_a_broken_chain_named_by_commands_and_replay(
        book: Any, db_url: str, stored: StoredEvents) -> None:  # noqa: F811
    paid(book)
    version = retopic(stored, "acme", "MembersChanged", "domain.subscription.events:PlanUpgraded")
    for command in (["set-members", "acme", "--members", "3"], ["replay", "verify"]):
        result = CliRunner(env=CLOCK).invoke(app, ["--db", db_url, *command])
        assert result.exit_code == 1, result.output
        assert (f"the stored events of acme fail their hash chain at version {version} (changed): they were "
                "changed by hand") in result.output
        assert "[event_chain_broken]" in result.output and "internal_error" not in result.output


def test_a_topic_naming_a_module_outside_the_ledger_is_refused_without_importing_it(
        book: Any, db_url: str, stored: StoredEvents) -> None:  # noqa: F811
    paid(book)
    version = retopic(stored, "acme", "MembersChanged", "this:s")
    assert "this" not in sys.modules
    result = CliRunner(env=CLOCK).invoke(app, ["--db", db_url, "set-members", "acme", "--members", "3"])
    assert result.exit_code == 1, result.output
    assert f"the stored events of acme fail their hash chain at version {version}" in result.output
    assert "this" not in sys.modules  # `import this` prints the Zen of Python: a stand-in for any side effect
