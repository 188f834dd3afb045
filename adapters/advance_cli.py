"""`subledger advance [--loop]`: record what has fallen due by now; with --loop, the production
scheduler (docs/scaling.md has its systemd and cron examples).

Mounted by adapters/cli.py. Only the workspaces the due index lists as due are loaded. In a loop
a refused round, or one the database failed (a restart, a failover, a dropped connection), is
reported on stderr and the loop goes on, so neither one bad workspace nor a lost connection
stops renewals for all the others; SIGTERM or SIGINT ends the loop between rounds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.cli_output import OUTPUT, JsonFlag, catch_up_after, passed_over, refuse, use_json
from adapters.failures import explain
from domain.clock import loaded
from domain.errors import AdvanceIncomplete, LedgerError

if TYPE_CHECKING:
    from domain.ledger import Ledger


def advance(json_output: JsonFlag = False,
            loop: Annotated[bool, typer.Option("--loop", help="Keep advancing, every --interval seconds, until "
                                               "SIGTERM or SIGINT: the production scheduler.")] = False,
            interval: Annotated[float, typer.Option(help="Seconds between rounds with --loop (at most a day).", min=0.1,
                                                     max=86400.0)] = 60.0,
            ) -> None:
    """Record every renewal, trial end, scheduled change and notice due by now; on a pinned test
    clock, stopping on each instant something fell due on the way. Only workspaces with
    something due are loaded (the due index)."""
    import signal
    import threading

    from adapters.cli import open_ledger  # the shared --db/--catalog options live there

    use_json(json_output)
    stop = threading.Event()
    if loop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    from adapters.schema import prepare

    with open_ledger() as ledger:
        while True:
            code = 0
            try:
                prepare(ledger.env)  # another version wrote meanwhile: its set-up (the due index indexed again)
                code = _advance_round(ledger)
            except Exception as e:  # noqa: BLE001 (a loop outlives a lost connection: the next round gets a fresh one)
                refused = e if isinstance(e, LedgerError) else explain(e, ledger.env)
                if refused is None:  # a bug, not the database: reported as one
                    raise
                if not loop:
                    refuse(refused)
                typer.echo(json.dumps({"ok": False, "error": refused.as_dict()}) if OUTPUT.json
                           else f"error: {refused.message} [{refused.code}]", err=True)
            if not loop and code:
                raise typer.Exit(code)
            if not loop or stop.wait(interval):
                break


def _lived(ledger: Ledger) -> dict[str, list[Any]]:
    """A pinned test clock is reached as a scheduler running all along would have lived it, as
    the HTTP test clock and scenarios do: from the first instant something fell due, stopping at
    each instant on the way (a card is retried on each of its retry days)."""
    from domain.clock import TestClock, first_stop, run_until

    pinned = ledger.clock
    start = first_stop(ledger, pinned.now())
    if start is None:
        return ledger.advance()  # nothing due: it still refuses a clock of another kind
    ledger.clock = clock = TestClock(start)
    try:
        return run_until(ledger, pinned.now(), clock.move_to)
    finally:
        ledger.clock = pinned  # a failed run leaves the next round (--loop) at the pinned instant


def _advance_round(ledger: Ledger) -> int:
    """One round, reported; its exit code: 1 when a workspace was passed over (3 for a bug)."""
    from projections.views import event_types, iso

    incomplete = None
    try:
        done = _lived(ledger) if ledger.clock.kind == "test" else ledger.advance()
    except AdvanceIncomplete as e:  # reported like a round, then refused: the others were advanced
        done, incomplete = e.done, e
    except LedgerError:
        catch_up_after(ledger)  # what was recorded before the failure
        raise
    if done:
        catch_up_after(ledger)
    now = ledger.clock.now()
    at = iso(now)
    behind = {ws: iso(sub.modified_on) for ws in ledger.due_workspaces(now)
              if (sub := loaded(ledger, ws)) is not None and sub.modified_on > now}
    failed = incomplete.failures() if incomplete else {}
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": not failed, "at": at, "due": {ws: event_types(ev) for ws, ev in done.items()},
                               "behind": behind, "failed": failed}))
    else:
        if not done and not failed:
            typer.echo(f"nothing due at {at}")
        for ws, events in done.items():
            typer.echo(f"{ws}: {', '.join(event_types(events))}")
        for ws, last in behind.items():  # nothing is recorded before a workspace's last fact
            typer.echo(f"{ws}: left for a later advance: its last fact is at {last}, after the clock", err=True)
    return passed_over(incomplete.failed if incomplete else {}, "not advanced")
