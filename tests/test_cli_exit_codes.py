"""One exit-code table for every command (README "Exit codes"): 0 done, 1 refused, 2 bad input,
3 infrastructure. Each row runs a command in process, once with --json (one JSON error object
with a stable code) and once as text (one `error: ... [code]` line on stderr)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from tests.conftest import PG, postgres_available

REFUSED_PORT = "postgresql://postgres@127.0.0.1:1/test"
UNKNOWN_DATABASE = "postgresql://postgres@127.0.0.1:5432/no_such_database"
UNKNOWN_ROLE = "postgresql://no_such_role@127.0.0.1:5432/test"
FAR_FUTURE = "9999-12-31T23:00:00-05:00"
READS = [["show", "ws1"], ["invoices", "ws1"], ["audit", "ws1"], ["books"], ["workspaces"], ["project", "status"]]
EVERY_KIND = [*READS, ["add-payment-method", "ws2", "--payment-method", "pm_card_visa"], ["advance"],
              ["project", "rebuild"]]


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('exit-codes')}/ledger.db"
    runner = CliRunner()
    for args in (["add-payment-method", "ws1", "--payment-method", "pm_card_visa"],
                 ["subscribe", "ws1", "--plan", "pro", "--interval", "month"]):
        assert runner.invoke(app, ["--db", db, *args]).exit_code == 0
    return db


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch, ledger_db: str) -> None:
    """The CLI exports --db to $SUBLEDGER_DB for its sub-apps: undo that after each test."""
    monkeypatch.setenv("SUBLEDGER_DB", ledger_db)


@pytest.fixture(scope="module")
def binary_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("binary") / "catalog.toml"
    path.write_bytes(bytes(range(256)) * 4)
    return str(path)


def run(db: str, args: list[str]) -> tuple[tuple[int, Any], tuple[int, str, str]]:
    """(exit code, JSON) with --json, and (exit code, stdout, stderr) as text."""
    runner = CliRunner()
    as_json = runner.invoke(app, ["--db", db, "--json", *args])
    as_text = runner.invoke(app, ["--db", db, *args])
    for result in (as_json, as_text):
        assert "Traceback" not in result.output, result.output
    try:
        document = json.loads(as_json.stdout)
    except json.JSONDecodeError:
        document = [json.loads(line) for line in as_json.stdout.splitlines()]  # audit --json: JSON Lines
    return (as_json.exit_code, document), (as_text.exit_code, as_text.stdout, as_text.stderr)


def assert_error(db: str, args: list[str], exit_code: int, code: str, words: str = "") -> str:
    (json_exit, document), (text_exit, _, stderr) = run(db, args)
    assert (json_exit, text_exit) == (exit_code, exit_code), (args, document, stderr)
    assert document["ok"] is False and document["error"]["code"] == code, (args, document)
    assert words in document["error"]["message"], (args, document)
    assert len(stderr.splitlines()) == 1 and stderr.rstrip().endswith(f"[{code}]"), (args, stderr)
    return str(document["error"]["message"])


@pytest.mark.parametrize("args", READS + [["books", "--workspace", "ws1", "--at", "2030-01-01T00:00:00Z"]],
                         ids=" ".join)
def test_exit_0_done_with_json_or_text(ledger_db: str, args: list[str]) -> None:
    (json_exit, document), (text_exit, stdout, stderr) = run(ledger_db, args)
    assert (json_exit, text_exit, stderr) == (0, 0, "")
    assert document and stdout.strip()
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout)  # the default is for people


@pytest.mark.parametrize(("args", "code"), [
    (["show", "nobody"], "not_found"),
    (["invoices", "nobody"], "not_found"),
    (["audit", "nobody"], "not_found"),
    (["books", "--workspace", "nobody"], "not_found"),
    (["payments", "resolve", "nobody"], "not_found"),
    (["payments", "abandon", "nobody"], "not_found"),
    (["audit", "verify", "--workspace", "nobody"], "not_found"),
    (["replay", "verify", "--workspace", "nobody"], "not_found"),
    (["notices", "pending", "nobody"], "not_found"),
    (["change-plan", "ws1", "--plan", "pro"], "already_on_plan"),
    (["change-plan", "ws1", "--plan", "team", "--actor", "bob", "--role", "member"], "not_authorized"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_exit_1_refused_or_no_such_workspace(ledger_db: str, args: list[str], code: str) -> None:
    assert_error(ledger_db, args, 1, code)


def test_exit_2_for_a_plan_the_catalog_does_not_sell_as_for_a_pack(ledger_db: str) -> None:
    assert_error(ledger_db, ["change-plan", "ws1", "--plan", "platinum"], 2, "unknown_plan", "team")


@pytest.mark.parametrize("args", EVERY_KIND, ids=" ".join)
def test_exit_2_for_a_database_url_that_cannot_be_read(args: list[str]) -> None:
    assert_error("mysql://x/y", args, 2, "invalid_request", "unsupported database URL")
    assert_error(f"{PG}?schema=Bad-Name", args, 2, "invalid_request", "is not a schema name")
    assert_error("sqlite:////nonexistent-folder/x.db", args, 2, "invalid_request", "does not exist")
    assert not Path("/nonexistent-folder").exists(), "a mistyped path creates nothing"


@pytest.mark.parametrize(("url", "words"), [
    ("sqlite://", "names no file"), ("sqlite:///", "names no file"), ("sqlite:///:memory:", "names no file"),
    ("sqlite:///ledger.db?mode=ro", "takes no parameters"),
    (f"{PG}?shema=typo", "'shema'"), (f"{PG}?schema=a&schema=b", "schema (twice)"), (f"{PG}?sslmode=require", "'sslmode'"),
])
def test_exit_2_for_a_database_url_whose_parts_would_be_ignored(url: str, words: str) -> None:
    """`sqlite:///$UNSET` would record into memory and lose it on exit; `?shema=` would use public."""
    for args in (["add-payment-method", "ws2", "--payment-method", "pm_card_visa"], ["show", "ws1"]):
        assert_error(url, args, 2, "invalid_request", words)


@pytest.mark.parametrize(("args", "words"), [
    (["show", "verify"], "reserved"),
    (["subscribe", "verify", "--plan", "pro", "--interval", "month"], "reserved"),
    (["invoices", "status"], "reserved"),
    (["books", "--workspace", "rebuild"], "reserved"),
    (["tokens", "create", "--role", "admin", "--workspace", "verify"], "reserved"),
    (["show", "ws 1"], "workspace id"),
    (["audit", "ws1", "--since", FAR_FUTURE], "out of range"),
    (["audit", "ws1", "--until", "yesterday"], "not ISO-8601"),
    (["audit", "ws1", "--format", "xml"], "--format"),
    (["books", "--at", FAR_FUTURE], "out of range"),
    (["project", "rebuild", "--only", "ledgerish"], "unknown read model"),
    (["set-seats", "ws1", "--seats", "-3"], "greater than or equal to 1"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_exit_2_bad_input(ledger_db: str, args: list[str], words: str) -> None:
    assert_error(ledger_db, args, 2, "invalid_request", words)


def test_exit_2_a_binary_catalog_file_is_bad_input(ledger_db: str, binary_file: str) -> None:
    assert_error(ledger_db, ["--catalog", binary_file, "show", "ws1"], 2, "invalid_request", "not a text file")
    (code, document), (text_code, _, stderr) = run(ledger_db, ["catalog", "check", binary_file])
    assert (code, document["error"]["code"], text_code) == (2, "invalid_catalog", 2)
    assert "not a text file" in stderr


@pytest.mark.parametrize("args", EVERY_KIND, ids=" ".join)
def test_exit_3_when_postgresql_refuses_the_connection(args: list[str]) -> None:
    message = assert_error(REFUSED_PORT, args, 3, "unavailable", "connection refused")
    assert "127.0.0.1:1" in message


@pytest.mark.postgres
@pytest.mark.parametrize("args", EVERY_KIND, ids=" ".join)
def test_exit_3_with_distinct_messages_for_unknown_database_and_failed_login(args: list[str]) -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL unreachable")
    unknown = assert_error(UNKNOWN_DATABASE, args, 3, "unavailable", "unknown database")
    login = assert_error(UNKNOWN_ROLE, args, 3, "unavailable", "authentication failed")
    assert "no_such_database" in unknown and "no_such_role" in login
    assert "connection refused" not in unknown + login and "couldn't get a connection" not in unknown + login


def test_the_exit_code_table_is_in_the_readme_and_the_help() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for row in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert row in readme
    help_text = " ".join(CliRunner().invoke(app, ["--help"]).stdout.split())
    assert "2 bad input or usage, 3 infrastructure" in help_text


def test_a_reader_that_stops_reading_is_not_a_database_failure(ledger_db: str) -> None:
    """`subledger audit ws1 | head -1`: the pipe closes early; the CLI ends as `cat` would (141,
    killed by SIGPIPE), with no error line blaming the database."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from adapters.cli import main; main()", "--db", ledger_db,
                             "audit", "ws1", "--format", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert "error" not in stderr and "unavailable" not in stderr
