"""A --db URL that cannot be used as written is bad input on every command (exit 2,
`invalid_request`, README "Exit codes"): `serve`, `tokens`, `demo` and `scenario run` said
`internal_error` (exit 3) naming a Python exception. An invalid scenario under --json prints
the refusal as JSON, as every other command does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli import app

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "forms_upgrade.json"


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://", "sqlite:////no_such_folder/x.db",
                                 "postgresql://postgres@127.0.0.1:5432/test?schema=Bad"])
@pytest.mark.parametrize("args", [["serve", "--port", "0"], ["tokens", "list"], ["tokens", "create", "--role", "operator"],
                                  ["demo"], ["scenario", "run", str(SCENARIO)]])
def test_a_bad_db_url_is_bad_input_on_serve_tokens_demo_and_scenarios(url: str, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["--db", url, "--json", *args])
    refused = json.loads(result.stdout)["error"]
    assert (result.exit_code, refused["code"]) == (2, "invalid_request"), result.output
    assert refused["message"].startswith("--db: ") and "ValueError" not in refused["message"]


def test_an_invalid_scenario_under_json_prints_the_refusal_as_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = CliRunner().invoke(app, ["--json", "scenario", "run", str(bad)])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "invalid_request"
    assert "invalid scenario: not valid JSON" in json.loads(result.stdout)["error"]["message"]
