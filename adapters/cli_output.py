"""How every command leaves: JSON or text, and one exit-code table for all of them.

    0  done
    1  refused: the ledger said no, or there is no such workspace (a stable code says why)
    2  bad input: a flag, argument, file or URL that cannot be used as written
    3  infrastructure: the database cannot be reached, refuses the login, does not exist, is
       read-only or busy (`unavailable`); or an internal error (`internal_error`)

Commands raise LedgerError (or let a database error escape); `Guarded`, the command group
class of the CLI, turns it into the message and the exit code, so no command picks its own.
"""

from __future__ import annotations

import json
import os
import select
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # typer vendors click since 0.2x; before, its errors were click's
    from typer.exceptions import TyperException as UsageProblem
except ImportError:  # pragma: no cover
    from click import ClickException as UsageProblem  # type: ignore[assignment]

from domain.errors import LedgerError, failure

OK, REFUSED, BAD_INPUT, INFRASTRUCTURE = 0, 1, 2, 3
BAD_INPUT_CODES = frozenset({"invalid_request", "invalid_catalog", "catalog_conflict", "unknown_plan"})
"""As the HTTP API's 400s (adapters/http/problems.py): a request that cannot be taken as written."""
INFRASTRUCTURE_CODES = frozenset({"unavailable", "internal_error"})
EPILOG = ("Exit codes: 0 done, 1 refused (or no such workspace), 2 bad input or usage, "
          "3 infrastructure (database unreachable, login refused, unknown database, read-only, busy).")


def exit_code(code: str) -> int:
    return BAD_INPUT if code in BAD_INPUT_CODES else INFRASTRUCTURE if code in INFRASTRUCTURE_CODES else REFUSED


@dataclass
class Output:
    json: bool = False


OUTPUT = Output()
"""The output mode of the current invocation (`--json` before or after the sub-command)."""

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def use_json(flag: bool) -> None:
    if flag:
        OUTPUT.json = True


def fail(code: str, message: str) -> NoReturn:
    """Print the error (a JSON object under --json, else one line on stderr) and exit per the table."""
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": False, "error": {"code": code, "message": message}}))
    else:
        typer.echo(f"error: {message} [{code}]", err=True)
    raise typer.Exit(exit_code(code))


def refuse(error: LedgerError) -> NoReturn:
    fail(error.code, error.message)


def catch_up_after(ledger: Any) -> None:
    """Catch the read models up after a recorded command. Their failure is not the command's:
    it is recorded (and any charge made), so the outcome is still reported with its own exit
    code, and the read models' error goes to stderr (`subledger project status` shows the lag);
    reporting the command as failed would invite a retry that buys twice."""
    from adapters.app import catch_up

    try:
        catch_up(ledger)
    except Exception as e:  # noqa: BLE001 (any failure of the read side, reported as such)
        first = (str(e).splitlines() or [type(e).__name__])[0][:300]
        typer.echo(f"warning: recorded, but the read models could not catch up: {first} [read_models_behind]",
                   err=True)


def passed_over(failed: dict[str, BaseException], not_done: str) -> int:
    """Name each workspace a walk over every workspace passed over (`not_done`: "not advanced"),
    on stderr (a bug with its traceback, for whoever fixes it); the walk's exit code: 0, 1 when
    one was passed over, 3 when one met a bug. The JSON output carries them as `failed`."""
    codes = [failure(e)["code"] for e in failed.values()]
    for ws, error in failed.items():
        if not isinstance(error, LedgerError):
            traceback.print_exception(error, file=sys.stderr)
        if not OUTPUT.json:
            typer.echo(f"{ws}: {not_done}: {failure(error)['message']} [{failure(error)['code']}]", err=True)
    return OK if not codes else INFRASTRUCTURE if "internal_error" in codes else REFUSED


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


SIGPIPE_EXIT = 141
"""How a Unix tool ends when the reader of its output went away (`| head`): killed by SIGPIPE."""


def stdout_gone() -> bool:
    """Whether our output's reader went away (a pipe with no reader polls as an error): a broken
    pipe elsewhere (a socket) is a failure like any other."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def reader_gone() -> NoReturn:
    """The output's reader stopped reading (`subledger audit ws1 | head -1`): not a failure of the
    database, so no error line; exit as `cat` would. Later writes go to /dev/null, so the flush
    at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise typer.Exit(SIGPIPE_EXIT)


class Guarded(TyperGroup):
    """A command group whose every failure leaves through `fail`: a refusal, bad input, an
    unusable database (named, in plain English) or a bug, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        if ctx.parent is None:
            OUTPUT.json = False
            prepared = sys.modules.get("adapters.schema")  # imported by the commands that open a database
            if prepared is not None:
                prepared.forget()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, UsageProblem):
            raise
        except LedgerError as e:
            refuse(e)
        except Exception as e:  # noqa: BLE001 - every failure gets a code and a sentence
            if isinstance(e, BrokenPipeError) and stdout_gone():
                reader_gone()
            from adapters import failures, schema

            explained = failures.explain(e, schema.last_env())
            if explained is not None:
                refuse(explained)
            if os.environ.get("SUBLEDGER_DEBUG"):
                traceback.print_exc()
            fail("internal_error",
                 f"unexpected {type(e).__name__}: {str(e)[:300]} (SUBLEDGER_DEBUG=1 shows the traceback)")
