"""The `subledger` command line: the typer app, its global options (--db, --catalog, --json)
and what every command shares: the ledger of --db, the clock, and the checks of ids.

The commands live in adapters/*_cli.py, one module per family, each mounted here: the domain
commands and preview (commands_cli), show, advance, scenario run and demo, catalog check, the
read models, payments, replay, the feed, notices, webhooks, tokens and serve. They import this
module only inside their functions, so `subledger --help` imports no database driver and no
read model (tests/test_cli_startup.py). Exit codes (one table for every command,
adapters/cli_output.py): 0 done, 1 refused, 2 bad input or usage, 3 infrastructure.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from adapters import (advance_cli, catalog_cli, commands_cli, entitlements_cli, feed_cli, notices_cli, payments_cli,
                      project_cli, read_cli, replay_cli, scenario_cli, serve_cli, show_cli, stripe_cli, webhooks_cli)
from adapters.cli_output import EPILOG, Guarded, fail, refuse, use_json
from adapters.settings import DEFAULT_DB
from domain.commands import ID, ID_RULE, check_new_workspace_id
from domain.errors import LedgerError

if TYPE_CHECKING:
    from domain.ledger import Clock, Ledger

app = typer.Typer(cls=Guarded, help="subledger: an event-sourced subscription billing ledger.", epilog=EPILOG,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Commands are listed in --help in the order they are mounted, and groups after them.
app.command("invoices")(project_cli.invoices)
app.command("audit")(project_cli.audit)
app.command("workspaces")(read_cli.workspaces)
app.command("books")(read_cli.books)
entitlements_cli.mount(app)
app.command("serve")(serve_cli.serve)
commands_cli.mount(app)
app.command("show")(show_cli.show)
app.command("advance")(advance_cli.advance)
app.command("demo")(scenario_cli.demo)
app.add_typer(scenario_cli.scenario_app, name="scenario")
app.add_typer(catalog_cli.catalog_app, name="catalog")
app.add_typer(project_cli.project_app, name="project")
app.add_typer(payments_cli.payments_app, name="payments")
app.add_typer(stripe_cli.stripe_app, name="stripe")
app.add_typer(replay_cli.replay_app, name="replay")
app.add_typer(feed_cli.feed_app, name="feed")
app.add_typer(notices_cli.notices_app, name="notices")
app.add_typer(serve_cli.tokens_app, name="tokens")
app.add_typer(webhooks_cli.webhooks_app, name="webhooks")


@dataclass
class Options:
    db: str | None = None
    catalog: str = "forms"


_OPTIONS = [Options()]
"""The global options of the current invocation, set by the app callback."""


class Invalid(Exception):
    """Bad input caught before the ledger is asked anything: exit 2."""


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"subledger {version('subledger')}")
        raise typer.Exit()


@app.callback()
def main_options(
    db: Annotated[str | None, typer.Option(help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                           show_default=False)] = None,
    catalog: Annotated[str, typer.Option(help="Catalog for newly registered workspaces: a name or a TOML path.")]
    = "forms",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                          help="Print the installed version and exit.")] = False,
) -> None:
    _OPTIONS[0] = Options(db, catalog)
    use_json(json_output)
    if db:
        os.environ["SUBLEDGER_DB"] = db  # the read-model commands take the same database


# ------------------------------------------------------------------ what the commands share


def _opts() -> Options:
    return _OPTIONS[0]


def cli_clock() -> Clock:
    """The clock adapters/instants.py `configured_clock` chooses; a bad SUBLEDGER_TEST_CLOCK exits 2."""
    from adapters.instants import configured_clock

    try:
        return configured_clock()
    except LedgerError as e:
        fail(e.code, e.message)


@contextmanager
def open_ledger() -> Iterator[Ledger]:
    """The ledger of --db; a database that cannot be used exits 3 (adapters/cli_output.py)."""
    from adapters.app import build_ledger
    opts = _opts()
    with _bad_options():
        ledger = build_ledger(opts.db, catalog=opts.catalog, clock=cli_clock())
    try:
        yield ledger
    finally:
        ledger.close()


def checked_db(url: str) -> str:
    """A database URL checked as opening a ledger checks it, for commands that hand it on
    (`serve`, `tokens`, `demo`, `scenario run`): one that cannot be used as written exits 2."""
    from adapters.settings import eventsourcing_env
    with _bad_options():
        eventsourcing_env(url)
    return url


@contextmanager
def _bad_options() -> Iterator[None]:
    """A bad --catalog or --db exits 2."""
    from domain.catalog import CatalogError
    try:
        yield
    except CatalogError as e:
        fail(getattr(e, "code", "invalid_request"), f"--catalog: {e}")
    except ValueError as e:  # the URL's, or an environment variable's ($SUBLEDGER_CIPHER_KEY: named as such)
        fail("invalid_request", str(e) if str(e).startswith("$") else f"--db: {e}")


def _check_id(value: str | None, what: str) -> None:
    if value is not None and not re.fullmatch(ID, value):
        raise Invalid(f"{what} {value[:70]!r} is not valid: {ID_RULE}")


def check_workspace(workspace: str) -> None:
    """A valid workspace id that does not read as a sub-command (`verify`); else exit 2."""
    try:
        _check_id(workspace, "workspace id")
        check_new_workspace_id(workspace)
    except Invalid as e:
        fail("invalid_request", str(e))
    except LedgerError as e:
        refuse(e)


@app.command("new-cipher-key")
def new_cipher_key(size: Annotated[int, typer.Option(help="Key bytes: 16, 24 or 32.")] = 32) -> None:
    """Print a new base64 AES key for $SUBLEDGER_CIPHER_KEY (encrypts stored events; docs/audit.md)."""
    from eventsourcing.cryptography import AESCipher

    if size not in AESCipher.KEY_SIZES:
        fail("invalid_request", "--size: 16, 24 or 32", 2)
    typer.echo(AESCipher.create_key(size))


# ------------------------------------------------------------------ entry point


def main() -> None:
    """Console entry point: every failure exits through adapters/cli_output.py's table."""
    app()


if __name__ == "__main__":
    # `python -m adapters.cli`: the command modules import `adapters.cli` for the options this
    # run's callback sets; without this alias they would import a second, unset copy of it.
    sys.modules.setdefault("adapters.cli", sys.modules[__name__])
    main()
