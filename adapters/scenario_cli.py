"""`subledger scenario run FILE` and `subledger demo`: the ledger driven on a test clock, from a
scenario file (docs/scenarios.md, the black-box contract) or from the seed examples.

Mounted by adapters/cli.py. Both default to a throwaway database, so neither writes test time
into a real ledger (a ledger refuses the other kind of clock anyway: `clock_conflict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adapters.cli_output import OUTPUT, JsonFlag, fail, use_json

scenario_app = typer.Typer(help="Run scenario files (docs/scenarios.md).", no_args_is_help=True)


def _db(given: str | None = None) -> str | None:
    """The database given (the option, else --db), checked as every command checks it: one that
    cannot be used as written is bad input (exit 2). None: a throwaway database."""
    from adapters import cli  # the shared --db/--catalog options live there
    db = given or cli._opts().db
    return cli.checked_db(db) if db else None


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(help="Scenario JSON file.", show_default=False)],
    db: Annotated[str | None, typer.Option(help="Database URL (default: a fresh throwaway SQLite).")] = None,
) -> None:
    """Run a scenario: one JSON line per step; exit 0 if every expect holds, 1 if one fails, 2 if invalid."""
    from adapters.scenario import ScenarioInvalid, load_scenario, run_scenario
    try:  # refused as every command refuses: {"ok": false, "error": ...} under --json
        load_scenario(file)
    except ScenarioInvalid as e:
        fail("invalid_request", f"{file}: invalid scenario: {e}")
    _, code = run_scenario(file, _db(db), on_step=lambda out: typer.echo(json.dumps(out)))
    raise typer.Exit(code)


def demo(db: Annotated[str | None, typer.Option(help="Database URL, best empty (default: a fresh ./subledger-demo.db).")]
         = None, json_output: JsonFlag = False) -> None:
    """Narrate the seed examples (forms, workspace, operations) on a test clock."""
    use_json(json_output)
    from adapters.demo import run_demo

    raise typer.Exit(run_demo(_db(db), as_json=OUTPUT.json))
