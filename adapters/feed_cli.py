"""The feed command: `subledger feed publish [--follow]`.

A typer app of its own, mounted by adapters/cli.py:
    app.add_typer(feed_cli.feed_app, name="feed")
The NATS client is imported only when a feed command runs. Exit codes: 0 done, 1 the feed
cannot go on (NATS unreachable, a stream that is not the feed's), 2 invalid input.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.settings import DEFAULT_DB

if TYPE_CHECKING:
    from adapters.feed import Publisher

DB = Annotated[str | None, typer.Option("--db", help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                        show_default=False)]
STREAM = Annotated[str | None, typer.Option("--stream", help="JetStream stream (default SUBLEDGER_<database name>).",
                                            show_default=False)]
PREFIX = Annotated[str | None, typer.Option("--subject-prefix", help="Subjects are <prefix>.events.<workspace> "
                                            "(default subledger.<database name>).", show_default=False)]
NATS = Annotated[str, typer.Option("--nats", envvar="SUBLEDGER_NATS_URL", help="NATS server URL.")]

feed_app = typer.Typer(help="Publish every stored event to NATS JetStream, exactly once per stream (docs/scaling.md).",
                       no_args_is_help=True)


def _publisher(db: str | None, stream: str | None, prefix: str | None, nats_url: str, batch: int = 500,
               duplicate_window: float = 120.0) -> Publisher:  # ok-float: seconds
    from adapters.feed import FeedError, Publisher
    from adapters.schema import prepare
    from adapters.settings import database_url, eventsourcing_env

    try:
        env = eventsourcing_env(database_url(db))
    except ValueError as e:
        typer.echo(f"error: --db: {e} [invalid_request]", err=True)
        raise typer.Exit(2) from None
    prepare(env)  # the event store set up once per version; the feed creates its own tracking table
    try:
        return Publisher(env, stream=stream, subject_prefix=prefix, nats_url=nats_url, batch=batch,
                         duplicate_window=duplicate_window, log=_log)
    except FeedError as e:
        typer.echo(f"error: {e} [invalid_request]", err=True)
        raise typer.Exit(2) from None


def _log(line: str) -> None:
    print(json.dumps({"feed": line}), file=sys.stderr, flush=True)


def _run(publisher: Publisher, work: Any) -> dict[str, Any]:
    import asyncio
    from adapters.feed import FeedError

    async def main() -> dict[str, Any]:
        async with publisher:
            return await work(publisher)

    try:
        return asyncio.run(main())
    except FeedError as e:
        typer.echo(f"error: {e} [feed_unavailable]", err=True)
        raise typer.Exit(1) from None


@feed_app.command("publish")
def publish(
    db: DB = None, stream: STREAM = None, subject_prefix: PREFIX = None, nats_url: NATS = "nats://127.0.0.1:4222",
    follow: Annotated[bool, typer.Option("--follow", help="Keep publishing new events until SIGTERM/SIGINT.")] = False,
    batch: Annotated[int, typer.Option(help="Events read and published per round (pipelined).", min=1)] = 500,
    poll: Annotated[float, typer.Option(help="Seconds between checks for new events (--follow).", min=0.01)] = 0.5,
    duplicate_window: Annotated[float, typer.Option(help="Seconds of JetStream dedupe, for a stream this creates.",
                                                    min=1.0)] = 120.0,
) -> None:
    """Publish the events recorded after the feed's position (then keep following with --follow),
    and print the feed's status as JSON."""
    import asyncio

    async def work(p: Publisher) -> dict[str, Any]:
        if follow:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await p.follow(stop, poll)
        await p.publish_pending()
        return p.status()

    result = _run(_publisher(db, stream, subject_prefix, nats_url, batch, duplicate_window), work)
    typer.echo(json.dumps(result, indent=2))
