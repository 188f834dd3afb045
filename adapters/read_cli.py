"""Read commands over the whole ledger: `workspaces` (every workspace, from plan_state) and
`books` (the journal's trial balance). Text by default, JSON with --json."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.cli_output import OUTPUT, JsonFlag, fail, print_json, use_json
from adapters.instants import parse_instant
from adapters.settings import DEFAULT_DB

DB = Annotated[str | None, typer.Option("--db", help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                        show_default=False)]


def workspaces(db: DB = None, json_output: JsonFlag = False) -> None:
    """Every workspace: plan, status, seats, period end, credit and open invoice (the plan_state read model)."""
    from adapters.app import read_models_of
    from projections.plan_state import read_plan_states
    from adapters import render
    use_json(json_output)
    with read_models_of(db) as projections, projections.engine.connect() as conn:
        states = read_plan_states(conn)
    if OUTPUT.json:
        print_json(states)
    elif not states:
        typer.echo("no workspaces yet")
    else:
        render.print_table(render.workspaces_table(states))


def books(
    db: DB = None,
    workspace: Annotated[str | None, typer.Option(help="One workspace only (default: all).", show_default=False)]
    = None,
    at: Annotated[str | None, typer.Option(help="As of this instant, inclusive (ISO-8601; default: now).",
                                           show_default=False)] = None,
    json_output: JsonFlag = False,
) -> None:
    """The journal's trial balance per currency: each account's balance (debits positive, credits
    negative) and what it holds; each total is zero."""
    from projections.journal import ACCOUNTS
    from adapters.read_docs import SIGNS, trial_balance_document
    from domain.commands import check_new_workspace_id
    from adapters.app import read_models_of
    from projections.plan_state import read_plan_state
    from adapters import render
    use_json(json_output)
    if workspace is not None:
        check_new_workspace_id(workspace)
    try:
        instant = parse_instant(at) if at is not None else None
    except ValueError as e:
        fail("invalid_request", f"--at: {e}")
    with read_models_of(db) as projections, projections.engine.connect() as conn:
        if workspace is not None and read_plan_state(conn, workspace) is None:
            fail("not_found", f"{workspace}: no such workspace")
        found = trial_balance_document(conn, workspace, instant)
    if OUTPUT.json:
        print_json(found)
        return
    con = render.console()
    con.print(f"Trial balance of {workspace or 'all workspaces'} as of {found['at'] or 'now'}", markup=False)
    con.print(f"Signs: {SIGNS}.", markup=False)
    if not found["currencies"]:
        con.print("no postings yet", markup=False)
    for table in render.books_tables(found, ACCOUNTS):
        con.print()
        render.print_table(table)
