"""The read-model commands: project (catch up, --follow, status, rebuild), invoices, audit.

A typer app of its own so that adapters/cli.py can mount it:
    app.add_typer(project_cli.project_app, name="project")
    app.command("invoices")(project_cli.invoices)
    app.command("audit")(project_cli.audit)
Reads catch the read models up first (inline mode), so on SQLite they are always current;
a read-only SQLite file is read as it stands. Text by default, JSON with --json. Exit codes:
adapters/cli_output.py (audit verify exits 1 when a chain is broken; rebuild is refused, exit 1,
on a broken event chain unless --force).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.cli_output import OUTPUT, Guarded, JsonFlag, fail, use_json
from adapters.instants import check_window, given_instant
from adapters.settings import DEFAULT_DB, database_url, eventsourcing_env

if TYPE_CHECKING:
    from projections.runner import Projections  # imported when a command runs: start-up stays short

DB = Annotated[str | None, typer.Option("--db", help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                        show_default=False)]

WORKERS = Annotated[int | None, typer.Option(
    "--workers", min=1, show_default=False,
    help="Processes for a large backlog on PostgreSQL, one per partition of the workspaces (default "
         "$SUBLEDGER_PROJECTION_WORKERS, else one per core; 1: a single process; SQLite: always 1).")]

app = typer.Typer(cls=Guarded, help="subledger read models.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
project_app = typer.Typer(help="Keep the read models current: catch up now, follow, status, rebuild.",
                          invoke_without_command=True)
app.add_typer(project_app, name="project")


def _env(db: str | None) -> dict[str, str]:
    from adapters.schema import prepare
    try:
        env = eventsourcing_env(database_url(db))
    except ValueError as e:
        fail("invalid_request", f"--db: {e}")
    return prepare(env, read_models=True)


@contextmanager
def _projections(db: str | None, catch_up: bool = True, force: bool = False,
                 workers: int | None = None) -> Iterator[Projections]:
    from projections.runner import Projections
    from adapters.app import refresh
    with Projections(_env(db), force=force, workers=workers) as projections:  # refused when the event chain is broken
        if catch_up:
            refresh(projections)
        yield projections


def _echo(data: Any) -> None:
    from projections.store import dumps
    typer.echo(json.dumps(json.loads(dumps(data)), indent=2))


def _status(projections: Projections) -> None:
    from adapters import render
    status = projections.status()
    if OUTPUT.json:
        _echo(status)
    else:
        render.print_table(render.status_table(status))


def _existing(conn: Any, workspace: str) -> None:
    """A workspace the ledger knows (`not_found`, exit 1, like `show`)."""
    from projections.plan_state import read_plan_state
    if read_plan_state(conn, workspace) is None:
        fail("not_found", f"{workspace}: no such workspace")


@project_app.callback()
def project(
    ctx: typer.Context,
    db: DB = None,
    follow_: Annotated[bool, typer.Option("--follow", help="Keep following: poll, then LISTEN on PostgreSQL.")] = False,
    batch: Annotated[int, typer.Option(help="Events per transaction while catching up.", min=1)] = 500,
    poll: Annotated[float, typer.Option(help="Seconds between checks.", min=0.01)] = 0.5,
    stall: Annotated[float, typer.Option(help="Seconds of lag without progress before falling back to polling.")]
    = 5.0,
    workers: WORKERS = None,
    json_output: JsonFlag = False,
) -> None:
    """Without a subcommand: catch every read model up to the head of the log (inline mode)."""
    from projections.follower import follow
    use_json(json_output)
    ctx.obj = {"db": db}
    if ctx.invoked_subcommand is not None:
        return
    if not follow_:
        with _projections(db, workers=workers) as projections:
            _status(projections)
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follow(_env(db), stop, poll=poll, stall=stall, batch=batch, workers=workers,
           log=lambda line: print(json.dumps({"follower": line}), file=sys.stderr, flush=True))


@project_app.command("status")
def status(ctx: typer.Context, db: DB = None, json_output: JsonFlag = False) -> None:
    """Position of each read model against the head of the event log, and the lag."""
    use_json(json_output)
    with _projections(db or ctx.obj["db"], catch_up=False) as projections:
        _status(projections)


def waiting_for_another() -> None:
    """Said while another process's rebuild (or set-up) holds the lock (replay rebuild says it too)."""
    typer.echo("a rebuild (or set-up) is running in another process: waiting for it to finish", err=True)


@project_app.command("rebuild")
def rebuild(ctx: typer.Context, db: DB = None,
            only: Annotated[list[str] | None, typer.Option("--only", help="Read model(s) to rebuild.")] = None,
            force: Annotated[bool, typer.Option("--force", help="Rebuild even if the event chain is broken.")]
            = False,
            workers: WORKERS = None,
            json_output: JsonFlag = False) -> None:
    """Replay every event into fresh versioned tables, then swap the stable views to them. Refused
    (exit 1) when the stored events fail their hash chain, unless --force. A second rebuild started
    meanwhile waits for the first (one set-up lock per database). On PostgreSQL a large log is
    replayed by --workers processes, one per partition of the workspaces."""
    from projections.runner import Projections
    from adapters.schema import schema_lock
    use_json(json_output)
    env = _env(db or ctx.obj["db"])
    with schema_lock(env, on_wait=waiting_for_another), Projections(env, force=force, workers=workers) as projections:
        unknown = set(only or ()) - set(projections.models)
        if unknown:
            fail("invalid_request", f"--only: unknown read model(s) {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(sorted(projections.models))}")
        projections.rebuild(only or None, force=force)
        _status(projections)


@app.command("invoices")
def invoices(workspace: Annotated[str, typer.Argument(help="Workspace id.", show_default=False)], db: DB = None,
             json_output: JsonFlag = False) -> None:
    """A workspace's invoices, each line with its arithmetic, their payments and failures, and the
    upcoming renewal invoice."""
    from domain.commands import check_new_workspace_id
    from projections.invoices import invoices_of
    from adapters import render
    from projections.upcoming_invoice import upcoming_of
    use_json(json_output)
    check_new_workspace_id(workspace)
    with _projections(db) as projections, projections.engine.connect() as conn:
        _existing(conn, workspace)
        data = {"workspace": workspace, "invoices": invoices_of(conn, workspace),
                "upcoming": upcoming_of(conn, workspace)}
    if OUTPUT.json:
        _echo(data)
        return
    for line in render.invoices_text(data):
        typer.echo(line)


@app.command("audit")
def audit(
    target: Annotated[str, typer.Argument(help="A workspace id to export its trail, or 'verify' to check the stored "
                                                "events' chain and that the audit trail agrees with them.")],
    db: DB = None,
    since: Annotated[str | None, typer.Option(help="From this instant (inclusive), ISO-8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this instant (exclusive), ISO-8601.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="text (default), csv or jsonl (as --json).",
                                            show_default=False)] = None,
    workspace: Annotated[str | None, typer.Option(help="With verify: check one workspace only.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Show or export a workspace's audit trail (text, CSV or JSON Lines), or `audit verify`: the
    stored events against their hash chain, snapshots against the events, and the audit trail
    against both (docs/audit.md). A failed verification names the first bad workspace and
    version and exits 1."""
    from projections import audit_trail
    from domain.commands import check_new_workspace_id
    from adapters import render
    from replay.verify import verify
    use_json(json_output)
    fmt = fmt or ("jsonl" if OUTPUT.json else "text")
    if fmt not in ("text", "csv", "jsonl"):
        fail("invalid_request", "--format: text, csv or jsonl")
    start, end = given_instant(since, "--since"), given_instant(until, "--until")
    check_window(start, end, ("--since", "--until"))
    if target == "verify":
        with _projections(db, catch_up=False) as projections:
            result = verify(projections, workspace)
        if fmt == "jsonl":  # --json, or --format jsonl: the result as one JSON document
            _echo(result)
        else:
            for line in render.verify_lines(result):
                typer.echo(line)
        if not result["ok"]:
            typer.echo(f"audit verify: {verdict(result)}", err=True)
            raise typer.Exit(1)
        return
    check_new_workspace_id(target)
    with _projections(db) as projections, projections.engine.connect() as conn:
        _existing(conn, target)
        found = audit_trail.rows(conn, target, start, end)
        if fmt == "text":
            for line in render.audit_lines([audit_trail.exported(row) for row in found]) or ["no audit rows"]:
                typer.echo(line)
        else:
            (audit_trail.write_csv if fmt == "csv" else audit_trail.write_jsonl)(sys.stdout, found)


def verdict(result: dict[str, Any]) -> str:
    """One line for a person: what failed, and where."""
    if result["ok"]:
        return f"{result['events']} events chained, {result['rows']} audit rows agree"
    where = f"workspace {result['workspace']}" if result.get("workspace") else result.get("stream") or "the store"
    version = f" version {result['version']}" if result.get("version") is not None else ""
    detail = f" ({result['detail']})" if result.get("detail") else ""
    return f"{result['failed']} broken at {where}{version}: {result.get('problem')}{detail}"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
