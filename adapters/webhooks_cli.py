"""`subledger webhooks ...`: endpoints, the dispatcher and dead letters (docs/webhooks.md).

Mounted by adapters/cli.py; the webhook modules (httpx, the outbox) are imported only when a
webhooks command runs. Exit codes as every command (adapters/cli_output.py).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime
from typing import Annotated, Any

import typer

from adapters.cli_output import OUTPUT, JsonFlag, print_json, use_json
from domain.text import plural

webhooks_app = typer.Typer(help="Outbound webhooks (Standard Webhooks) for downstream services: endpoints, "
                           "delivery, dead letters (docs/webhooks.md).", no_args_is_help=True)


def _env() -> dict[str, str]:
    """The eventsourcing environment of --db, its event store set up."""
    from adapters.cli import _opts
    from adapters.schema import prepare
    from adapters.settings import database_url, eventsourcing_env
    try:
        env = eventsourcing_env(database_url(_opts().db))
    except ValueError as e:
        from domain.errors import LedgerError
        raise LedgerError("invalid_request", f"--db: {e}") from None
    return prepare(env)


def _iso(value: datetime | None) -> str | None:
    from projections.store import iso
    return iso(value)


def _log(line: str) -> None:
    print(json.dumps({"webhooks": line}), file=sys.stderr, flush=True)


@webhooks_app.command("add")
def add(url: Annotated[str, typer.Argument(help="Where to POST: an http:// or https:// URL.")],
        events: Annotated[str, typer.Option("--events", help="Event types, comma-separated (e.g. "
                                            "PlanUpgraded,PaymentFailed), or '*' for all.")],
        workspace: Annotated[str | None, typer.Option(help="Only this workspace's events.")] = None,
        json_output: JsonFlag = False) -> None:
    """Add an endpoint for the events recorded from now on; print its id and signing secret once."""
    from adapters.webhooks import WebhookStore, check_url, parse_event_types
    from domain.ledger import Ledger
    use_json(json_output)
    check_url(url)
    parse_event_types(events)  # bad input is refused before the database is touched
    env = _env()
    ledger = Ledger(env)
    try:
        with WebhookStore(env) as store:
            row = store.add(url, events, workspace, head=lambda: ledger.recorder.max_notification_id() or 0)
    finally:
        ledger.close()
    if OUTPUT.json:
        print_json({"ok": True, "id": row["id"], "secret": row["secret"], "url": row["url"],
                    "events": row["events"].split(","), "workspace": row["workspace"], "since": row["since"]})
    else:
        typer.echo(f"{row['id']}\n{row['secret']}\n(signing secret shown once: store it now; events after "
                   f"position {row['since']} go to {row['url']})")


@webhooks_app.command("list")
def list_endpoints(json_output: JsonFlag = False) -> None:
    """Every live endpoint, its filters and its messages by status (never the secret)."""
    from adapters.webhooks import WebhookStore
    use_json(json_output)
    with WebhookStore(_env()) as store:
        rows = [{**r, "created_at": _iso(r["created_at"])} for r in store.list_endpoints()]
    if OUTPUT.json:
        print_json({"ok": True, "endpoints": rows})
        return
    if not rows:
        typer.echo("no webhook endpoints")
    for r in rows:
        counts = ", ".join(f"{n} {s}" for s, n in r["messages"].items())
        typer.echo(f"{r['id']}  {r['url']}  events={','.join(r['events'])}  workspace={r['workspace'] or '*'}  "
                   f"({counts})")


@webhooks_app.command("remove")
def remove(endpoint_id: Annotated[str, typer.Argument(help="The endpoint's id (we_...).")],
           json_output: JsonFlag = False) -> None:
    """Remove an endpoint: nothing more is sent to it; its pending and dead messages are dropped."""
    from adapters.webhooks import WebhookStore
    use_json(json_output)
    with WebhookStore(_env()) as store:
        store.remove(endpoint_id)
    if OUTPUT.json:
        print_json({"ok": True, "removed": endpoint_id})
    else:
        typer.echo(f"removed {endpoint_id}")


@webhooks_app.command("deliver")
def deliver(
    loop: Annotated[bool, typer.Option("--loop/--once", help="Keep delivering until SIGTERM/SIGINT, or send what "
                                       "is due now and stop.")] = False,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before a message becomes a dead letter.")] = 8,
    max_age: Annotated[float, typer.Option(min=0.0, help="Seconds after which a failing message becomes a dead "
                                           "letter.")] = 86400.0,
    backoff: Annotated[float, typer.Option(min=0.0, help="Seconds before the first retry; doubles after each "
                                           "failure.")] = 5.0,
    max_backoff: Annotated[float, typer.Option(min=0.0, help="Longest wait between attempts, seconds.")] = 3600.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to connect, send and answer, each.")] = 10.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Queues (endpoint x workspace) sent at once.")] = 4,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between rounds (--loop).")] = 0.5,
    keep_delivered: Annotated[float, typer.Option(min=0.0, help="Days delivered messages are kept before "
                                                  "they are deleted.")] = 7.0,
    lock_wait: Annotated[float | None, typer.Option(min=0.0, help="Seconds to wait while another dispatcher runs "
                                                   "(default: 30 with --once, for ever with --loop).",
                                                   show_default=False)] = None,
    json_output: JsonFlag = False,
) -> None:
    """Queue new events for the endpoints that want them and send them (the dispatcher)."""
    from datetime import timedelta

    from adapters.webhooks_dispatch import Dispatcher, RetryPolicy, dispatcher_lock
    use_json(json_output)
    env = _env()
    policy = RetryPolicy(max_attempts=max_attempts, max_age=timedelta(seconds=max_age), backoff=backoff,
                         max_backoff=max_backoff, timeout=timeout)
    stop = threading.Event()
    if loop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    with dispatcher_lock(env, wait=lock_wait if lock_wait is not None else None if loop else 30.0,
                         on_wait=lambda: _log("another dispatcher is running: waiting for its lock")), \
            Dispatcher(env, policy, concurrency=concurrency, log=_log,
                       keep_delivered=timedelta(days=keep_delivered)) as dispatcher:
        if loop:
            dispatcher.run(stop, poll)
            dispatcher.drain()
        result: dict[str, Any] = dispatcher.status() if loop else dispatcher.run_once()
    if OUTPUT.json:
        print_json({"ok": True, **result})
    else:
        typer.echo(_delivered(result))


def _delivered(result: dict[str, Any]) -> str:
    """`deliver`'s summary in words: this run's counts, then the queue as it stands."""
    run, held = result["this_run"], result["messages"]
    done = ", ".join(f"{run.get(k, 0)} {k}" for k in ("queued", "delivered", "failed", "dead"))
    return (f"this run: {done}\n"
            f"messages: {held['pending']} pending, {held['delivered']} delivered, {held['dead']} dead\n"
            f"events read up to {result['position'] or 0} of {result['head'] or 0}")


@webhooks_app.command("dead")
def dead(json_output: JsonFlag = False) -> None:
    """The dead letters: messages that failed too often or for too long."""
    from adapters.webhooks import WebhookStore
    use_json(json_output)
    with WebhookStore(_env()) as store:
        rows = [{**r, "created_at": _iso(r["created_at"]), "finished_at": _iso(r["finished_at"])}
                for r in store.dead()]
    if OUTPUT.json:
        print_json({"ok": True, "dead": rows})
        return
    if not rows:
        typer.echo("no dead letters")
    for r in rows:
        typer.echo(f"{r['msg_id']}  {r['workspace']}  {r['event_type']}  {plural(r['attempts'], 'attempt')}  "
                   f"{r['last_error'] or ''}")


@webhooks_app.command("retry")
def retry(msg_ids: Annotated[list[str], typer.Argument(help="Dead letters' ids (msg_...), as `webhooks dead` "
                                                       "lists them.")],
          json_output: JsonFlag = False) -> None:
    """Queue dead letters again: the next `webhooks deliver` sends them (attempts start over)."""
    from adapters.webhooks import WebhookStore
    use_json(json_output)
    with WebhookStore(_env()) as store:
        store.retry(msg_ids)
    if OUTPUT.json:
        print_json({"ok": True, "queued": msg_ids})
    else:
        typer.echo(f"queued again: {', '.join(msg_ids)}")
