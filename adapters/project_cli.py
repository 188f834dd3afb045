"""The read-model commands: project (catch up, --follow, status, rebuild), invoices, audit.

A typer app of its own so that adapters/cli.py can mount it:
    app.add_typer(project_cli.project_app, name="project")
    app.command("invoices")(project_cli.invoices)
    app.command("audit")(project_cli.audit)
Reads catch the read models up first (inline mode), so on SQLite they are always current.
Exit codes: 0 done, 1 audit verification failed, 2 invalid input.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from adapters.app import ensure_schema
from adapters.settings import DEFAULT_DB, database_url, eventsourcing_env
from projections import audit_trail
from projections.invoices import invoices_of
from projections.runner import Projections, follow
from projections.store import dumps
from projections.upcoming_invoice import upcoming_of

DB = Annotated[str | None, typer.Option("--db", help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                        show_default=False)]

app = typer.Typer(help="subledger read models.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
project_app = typer.Typer(help="Keep the read models current: catch up now, follow, status, rebuild.",
                          invoke_without_command=True)
app.add_typer(project_app, name="project")


def _env(db: str | None) -> dict[str, str]:
    try:
        env = eventsourcing_env(database_url(db))
    except ValueError as e:
        typer.echo(f"error: --db: {e} [invalid_request]", err=True)
        raise typer.Exit(2) from None
    ensure_schema(env)
    return env


@contextmanager
def _projections(db: str | None, catch_up: bool = True) -> Iterator[Projections]:
    with Projections(_env(db)) as projections:
        if catch_up:
            projections.catch_up()
        yield projections


def _echo(data: Any) -> None:
    typer.echo(json.dumps(json.loads(dumps(data)), indent=2))


def _instant(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        typer.echo(f"error: {flag}: not an ISO-8601 instant: {text!r} [invalid_request]", err=True)
        raise typer.Exit(2) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


@project_app.callback()
def project(
    ctx: typer.Context,
    db: DB = None,
    follow_: Annotated[bool, typer.Option("--follow", help="Keep following: poll, then LISTEN on PostgreSQL.")] = False,
    batch: Annotated[int, typer.Option(help="Events per transaction while catching up.", min=1)] = 500,
    poll: Annotated[float, typer.Option(help="Seconds between checks.", min=0.01)] = 0.5,
    stall: Annotated[float, typer.Option(help="Seconds of lag without progress before falling back to polling.")]
    = 5.0,
) -> None:
    """Without a subcommand: catch every read model up to the head of the log (inline mode)."""
    ctx.obj = {"db": db}
    if ctx.invoked_subcommand is not None:
        return
    if not follow_:
        with _projections(db) as projections:
            _echo(projections.status())
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follow(_env(db), stop, poll=poll, stall=stall, batch=batch,
           log=lambda line: print(json.dumps({"follower": line}), file=sys.stderr, flush=True))


@project_app.command("status")
def status(ctx: typer.Context, db: DB = None) -> None:
    """Position of each read model against the head of the event log, and the lag."""
    with _projections(db or ctx.obj["db"], catch_up=False) as projections:
        _echo(projections.status())


@project_app.command("rebuild")
def rebuild(ctx: typer.Context, db: DB = None,
            only: Annotated[list[str] | None, typer.Option("--only", help="Read model(s) to rebuild.")] = None) -> None:
    """Replay every event into fresh versioned tables, then swap the stable views to them."""
    with _projections(db or ctx.obj["db"], catch_up=False) as projections:
        unknown = set(only or ()) - set(projections.models)
        if unknown:
            typer.echo(f"error: --only: unknown read model(s) {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(sorted(projections.models))} [invalid_request]", err=True)
            raise typer.Exit(2)
        projections.rebuild(only or None)
        _echo(projections.status())


@app.command("invoices")
def invoices(workspace: str, db: DB = None) -> None:
    """A workspace's invoices (lines, payments, failures) and its upcoming renewal invoice."""
    with _projections(db) as projections, projections.engine.connect() as conn:
        _echo({"workspace": workspace, "invoices": invoices_of(conn, workspace), "upcoming": upcoming_of(conn, workspace)})


@app.command("audit")
def audit(
    target: Annotated[str, typer.Argument(help="A workspace id to export its trail, or 'verify' to check the chains.")],
    db: DB = None,
    since: Annotated[str | None, typer.Option(help="From this instant (inclusive), ISO-8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this instant (exclusive), ISO-8601.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "jsonl",
    workspace: Annotated[str | None, typer.Option(help="With verify: check one workspace only.")] = None,
) -> None:
    """Export the audit trail (CSV or JSON Lines), or `audit verify` the hash chains."""
    with _projections(db) as projections, projections.engine.connect() as conn:
        if target == "verify":
            result = audit_trail.verify(conn, workspace)
            _echo(result)
            if not result["ok"]:
                raise typer.Exit(1)
            return
        if fmt not in ("csv", "jsonl"):
            typer.echo("error: --format: csv or jsonl [invalid_request]", err=True)
            raise typer.Exit(2)
        found = audit_trail.rows(conn, target, _instant(since, "--since"), _instant(until, "--until"))
        (audit_trail.write_csv if fmt == "csv" else audit_trail.write_jsonl)(sys.stdout, found)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
