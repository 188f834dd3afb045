"""`subledger show WORKSPACE`: one workspace's plan, period, credits, balances and open invoice.

Mounted by adapters/cli.py. It reads the plan_state read model, at once when the read models are
already caught up (adapters/current_read.py: no projection machinery is imported, which is most
of a `show`'s start-up, tests/test_cli_startup.py), else through the ledger after catching up.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from adapters.cli_output import OUTPUT, JsonFlag, fail, use_json


def show(workspace: Annotated[str, typer.Argument(help="Workspace id.")], json_output: JsonFlag = False) -> None:
    """Show a workspace's plan, period, credits, balances and open invoice (the plan_state read model)."""
    from adapters import cli  # the shared options, ledger opening and id checks live there

    use_json(json_output)
    cli.check_workspace(workspace)
    state = _plan_state(workspace)
    if state is None:
        fail("not_found", f"{workspace}: no such workspace")
    if OUTPUT.json:
        typer.echo(json.dumps(state))
        return
    from adapters import render

    render.print_table(render.state_table(state))


def _plan_state(workspace: str) -> dict[str, Any] | None:
    """The workspace's plan_state document once the read models are caught up: read at once when
    they already are (adapters/current_read.py), else through the ledger and its projections."""
    from adapters import cli, current_read
    from adapters.settings import database_url, eventsourcing_env
    from domain.catalog import NewerRules, load_catalog

    opts = cli._opts()
    with cli._bad_options():  # what open_ledger refuses before it opens anything
        cli.cli_clock()
        try:
            load_catalog(opts.catalog)
        except NewerRules:  # a read: the catalog is only checked when a command records with it
            pass
        env = eventsourcing_env(database_url(opts.db))
    found = current_read.plan_state(env, workspace)
    if found is not None:
        return found.state
    from adapters.app import read_models, refresh
    from projections.plan_state import read_plan_state

    with cli.open_ledger() as ledger, read_models(ledger) as projections:
        refresh(projections)
        with projections.engine.connect() as conn:
            return read_plan_state(conn, workspace)
