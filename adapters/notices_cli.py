"""`subledger notices`: the outbox a mailer drains (R17 notices, payment notices).

Mounted by adapters/cli.py. `pending` lists the notices due by now that are neither delivered
nor withdrawn; `ack ID` records one delivered, once: acknowledging it again changes nothing and
says so, and an acknowledgement survives any rebuild of the read models (docs/read-models.md).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from adapters.cli_output import OUTPUT, fail, refuse, use_json
from domain.errors import LedgerError

notices_app = typer.Typer(help="The notices outbox: what a mailer sends, exactly once.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NOTICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


def _cli() -> Any:
    from adapters import cli  # the shared options, ledger opening and failure exits live there
    return cli


@notices_app.command("pending")
def pending(workspace: Annotated[str | None, typer.Argument(help="Only this workspace.", show_default=False)] = None,
            json_output: JsonFlag = False) -> None:
    """Notices due by now, not yet delivered: send each, then `notices ack ID`."""
    from projections.store import iso
    from projections import notices
    from adapters.app import read_models
    cli = _cli()
    use_json(json_output)
    if workspace is not None:
        try:
            cli._check_id(workspace, "workspace id")
        except cli.Invalid as e:
            fail("invalid_request", str(e))
    with cli.open_ledger() as ledger, read_models(ledger) as projections:
        if workspace is not None and workspace not in ledger.workspaces():
            fail("not_found", f"{workspace}: no such workspace")
        projections.catch_up()
        at = ledger.clock.now()
        with projections.engine.connect() as conn:
            rows = notices.pending(conn, at, workspace)
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": True, "at": iso(at), "pending": rows}))
        return
    if not rows:
        typer.echo(f"no notices pending at {iso(at)}")
    for row in rows:
        about = ", ".join(f"{k} {v}" for k, v in row["detail"].items() if v is not None)
        typer.echo(f"{row['notice_id']}  {row['kind']}  due {row['due_at']}" + (f"  ({about})" if about else ""))


@notices_app.command("ack")
def ack(notice_id: Annotated[str, typer.Argument(help="The notice id `notices pending` printed.", show_default=False)],
        json_output: JsonFlag = False) -> None:
    """Record a notice delivered. Again: nothing changes (it says when it was). Unknown: not_found."""
    from projections.store import iso
    from projections import notices
    from adapters.app import read_models
    cli = _cli()
    use_json(json_output)
    if not NOTICE_ID.fullmatch(notice_id):
        fail("invalid_request", f"{notice_id[:60]!r} is not a notice id (workspace:version:kind)")
    with cli.open_ledger() as ledger, read_models(ledger) as projections:
        try:
            ledger.check_clock()  # a delivery is stamped on the ledger's own kind of clock, as its events are
            projections.catch_up()
            done = notices.acknowledge(projections.engine, notice_id, ledger.clock.now())
        except LedgerError as e:
            refuse(e)
    if done is None:
        fail("not_found", f"no notice {notice_id}")
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": True, "notice_id": notice_id, "kind": done.notice["kind"],
                               "workspace": done.notice["workspace"], "delivered_at": iso(done.delivered_at),
                               "already_acknowledged": done.already}))
    elif done.already:
        typer.echo(f"{notice_id} was already acknowledged at {iso(done.delivered_at)}: nothing changed")
    else:
        typer.echo(f"acknowledged {notice_id} ({done.notice['kind']}), delivered at {iso(done.delivered_at)}")
