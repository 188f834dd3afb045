"""The read-model commands: project (catch up, --follow, status, rebuild), invoices, audit.

A typer app of its own so that adapters/cli.py can mount it:
    app.add_typer(project_cli.project_app, name="project")
    app.command("invoices")(project_cli.invoices)
    app.command("audit")(project_cli.audit)
Reads catch the read models up first (inline mode), so on SQLite they are always current.
Exit codes: 0 done, 1 audit verification failed or rebuild refused (broken event chain), 2 invalid input.
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
from domain.errors import LedgerError
from projections import audit_trail
from projections.invoices import invoices_of
from projections.runner import Projections, follow
from projections.store import dumps
from projections.upcoming_invoice import upcoming_of
from replay.verify import verify

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
def _projections(db: str | None, catch_up: bool = True, force: bool = False) -> Iterator[Projections]:
    try:
        projections = Projections(_env(db), force=force)
    except LedgerError as e:  # a read model's version moved and the event chain is broken
        typer.echo(f"error: {e.message} [{e.code}]", err=True)
        raise typer.Exit(1) from None
    with projections:
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
            only: Annotated[list[str] | None, typer.Option("--only", help="Read model(s) to rebuild.")] = None,
            force: Annotated[bool, typer.Option("--force", help="Rebuild even if the event chain is broken.")]
            = False) -> None:
    """Replay every event into fresh versioned tables, then swap the stable views to them.
    Refused (exit 1) when the stored events fail their hash chain, unless --force."""
    with _projections(db or ctx.obj["db"], catch_up=False, force=force) as projections:
        unknown = set(only or ()) - set(projections.models)
        if unknown:
            typer.echo(f"error: --only: unknown read model(s) {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(sorted(projections.models))} [invalid_request]", err=True)
            raise typer.Exit(2)
        try:
            projections.rebuild(only or None, force=force)
        except LedgerError as e:
            typer.echo(f"error: {e.message} [{e.code}]", err=True)
            raise typer.Exit(1) from None
        _echo(projections.status())


@app.command("invoices")
def invoices(workspace: str, db: DB = None) -> None:
    """A workspace's invoices (lines, payments, failures) and its upcoming renewal invoice."""
    with _projections(db) as projections, projections.engine.connect() as conn:
        _echo({"workspace": workspace, "invoices": invoices_of(conn, workspace), "upcoming": upcoming_of(conn, workspace)})


@app.command("audit")
def audit(
    target: Annotated[str, typer.Argument(help="A workspace id to export its trail, or 'verify' to check the stored "
                                                "events' chain and that the audit trail agrees with them.")],
    db: DB = None,
    since: Annotated[str | None, typer.Option(help="From this instant (inclusive), ISO-8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this instant (exclusive), ISO-8601.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "jsonl",
    workspace: Annotated[str | None, typer.Option(help="With verify: check one workspace only.")] = None,
) -> None:
    """Export the audit trail (CSV or JSON Lines), or `audit verify`: the stored events against
    their hash chain, snapshots against the events, and the audit trail against both (docs/audit.md).
    A failed verification names the first bad workspace and version and exits 1."""
    if target == "verify":
        with _projections(db, catch_up=False) as projections:
            result = verify(projections, workspace)
        _echo(result)
        if not result["ok"]:
            typer.echo(f"audit verify: {verdict(result)}", err=True)
            raise typer.Exit(1)
        return
    with _projections(db) as projections, projections.engine.connect() as conn:
        if fmt not in ("csv", "jsonl"):
            typer.echo("error: --format: csv or jsonl [invalid_request]", err=True)
            raise typer.Exit(2)
        found = audit_trail.rows(conn, target, _instant(since, "--since"), _instant(until, "--until"))
        (audit_trail.write_csv if fmt == "csv" else audit_trail.write_jsonl)(sys.stdout, found)


def verdict(result: dict[str, Any]) -> str:
    """One line for a person: what failed, and where."""
    if result["ok"]:
        return f"{result['events']} events chained, {result['rows']} audit rows agree"
    where = f"workspace {result['workspace']}" if result.get("workspace") else result.get("stream") or "the store"
    version = f" version {result['version']}" if result.get("version") is not None else ""
    return f"{result['failed']} broken at {where}{version}: {result.get('problem')} ({result.get('detail', '')})"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
