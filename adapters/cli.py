"""The `subledger` command line: one subcommand per domain command, plus preview, show,
advance, demo, scenario run and catalog check.

Flags come from the command models in domain/commands.py, so the CLI cannot drift from the
domain. Exit codes (one table for every command, adapters/cli_output.py): 0 done, 1 refused,
2 bad input or usage, 3 infrastructure.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters import (entitlements_cli, feed_cli, notices_cli, payments_cli, project_cli, read_cli, replay_cli,
                      serve_cli, stripe_cli, webhooks_cli)
from adapters.cli_output import EPILOG, OUTPUT, Guarded, JsonFlag, exit_code, fail, refuse, use_json
from adapters.settings import DEFAULT_DB
from domain.commands import COMMANDS, ID, ID_RULE, Command, check_new_workspace_id, parse_actor, parse_command
from domain.errors import LedgerError

if TYPE_CHECKING:
    from domain.ledger import Clock, Ledger

DEFAULT_ACTOR = "cli-admin"
NULL = "none"
"""Typed for a nullable argument (add-on, contract) to clear it."""

INT_FLAGS = {"tier", "seats", "members", "credits", "operations"}
NULLABLE = {"addon", "contract"}
HELP = {
    "plan": "Plan id in the workspace's catalog (e.g. pro, team, core).",
    "tier": "Operations per interval, as listed (annual tiers by yearly operations, e.g. 120000).",
    "interval": "month or year.",
    "seats": "Paid seats (per-seat plans).",
    "keep_team": "The team to keep when moving to a one-team plan (R18).",
    "members": "Active members in the workspace.",
    "gb": "Storage used, in GB (a decimal such as 12.5).",
    "addon": "Storage add-on id, or 'none' to remove it.",
    "pack": "AI credit pack id (e.g. ai-1000).",
    "credits": "AI credits to consume.",
    "operations": "Operations used or bought.",
    "payment_method": "Payment method token (test gateway: pm_card_visa, pm_card_chargeDeclined).",
    "invoice": "Invoice id (default: the open one).",
    "contract": "Contract kind (enterprise, campus, ...), or 'none' to end it.",
}
COMMAND_HELP = {
    "subscribe": "Start a plan: a paid plan charges now, a trial plan starts the trial (R15).",
    "change-plan": "Upgrade now, prorated (R11-R16), or downgrade per the catalog policy (R17, R18).",
    "cancel-change": "Cancel a scheduled downgrade or cancellation: keep the current plan (R17).",
    "set-seats": "Change paid seats: added seats are charged for the rest of the period (R21).",
    "set-members": "Report active members; above the seat limit a warning stays on (R24).",
    "report-storage": "Report storage used, in GB (R6, R19).",
    "set-storage-addon": "Add, switch or remove (--addon none) the recurring storage add-on (R22).",
    "buy-ai-credits": "Buy a one-time AI credit pack (R23).",
    "consume-ai-credits": "Spend AI credits: granted ones first, then purchased ones.",
    "record-usage": "Record operations used (operations catalogs).",
    "buy-operations": "Buy extra operations in whole packs (operations catalogs).",
    "add-payment-method": "Add a payment method; the newest becomes the default.",
    "remove-payment-method": "Remove a payment method.",
    "pay-invoice": "Pay every open invoice, oldest first (or the named one), with the default payment method (R8).",
    "set-contract": "Put the workspace on a custom contract (R9), or --contract none to end it.",
    "cancel": "Cancel the subscription at the end of the period.",
}
ALL_FLAGS = sorted({name for cls in COMMANDS.values() for name in cls.model_fields})

app = typer.Typer(cls=Guarded, help="subledger: an event-sourced subscription billing ledger.", epilog=EPILOG,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
scenario_app = typer.Typer(help="Run scenario files (docs/scenarios.md).", no_args_is_help=True)
catalog_app = typer.Typer(help="Catalog files (docs/catalogs.md).", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
app.add_typer(catalog_app, name="catalog")
app.add_typer(project_cli.project_app, name="project")
app.add_typer(payments_cli.payments_app, name="payments")
app.add_typer(stripe_cli.stripe_app, name="stripe")
app.add_typer(replay_cli.replay_app, name="replay")
app.add_typer(feed_cli.feed_app, name="feed")
app.command("invoices")(project_cli.invoices)
app.command("audit")(project_cli.audit)
app.command("workspaces")(read_cli.workspaces)
app.command("books")(read_cli.books)
entitlements_cli.mount(app)
app.add_typer(notices_cli.notices_app, name="notices")
app.add_typer(serve_cli.tokens_app, name="tokens")
app.command("serve")(serve_cli.serve)
app.add_typer(webhooks_cli.webhooks_app, name="webhooks")


@dataclass
class Options:
    db: str | None = None
    catalog: str = "forms"


_OPTIONS = [Options()]
"""The global options of the current invocation, set by the app callback."""


class Invalid(Exception):
    """Bad input caught before the ledger is asked anything: exit 2."""


@app.callback()
def main_options(
    db: Annotated[str | None, typer.Option(help=f"Database URL (else $SUBLEDGER_DB, else {DEFAULT_DB}).",
                                           show_default=False)] = None,
    catalog: Annotated[str, typer.Option(help="Catalog for newly registered workspaces: a name or a TOML path.")]
    = "forms",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    _OPTIONS[0] = Options(db, catalog)
    use_json(json_output)
    if db:
        os.environ["SUBLEDGER_DB"] = db  # the read-model commands take the same database


# ------------------------------------------------------------------ helpers


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


@contextmanager
def _bad_options() -> Iterator[None]:
    """A bad --catalog or --db exits 2."""
    from domain.catalog import CatalogError
    try:
        yield
    except CatalogError as e:
        fail(getattr(e, "code", "invalid_request"), f"--catalog: {e}")
    except ValueError as e:
        fail("invalid_request", f"--db: {e}")


def _value(name: str, text: str | None) -> Any:
    """A flag's text as the command model expects it: whole numbers as int, 'none' as null."""
    if text is None:
        return None
    if name in NULLABLE and text.lower() == NULL:
        return None
    if name in INT_FLAGS:
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip()):
            raise Invalid(f"--{name.replace('_', '-')}: {text[:40]!r} is not a whole number")
        return int(text)
    return text


def build_command(do: str, flags: dict[str, str | None]) -> Command:
    args = {name: _value(name, text) for name, text in flags.items() if text is not None}
    try:
        return parse_command(do, args)
    except LedgerError as e:
        raise Invalid(e.message) from None


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


def emit(out: dict[str, Any]) -> None:
    """Print a command's outcome; a refusal exits 1 (bad input 2, see adapters/cli_output.py)."""
    if OUTPUT.json:
        typer.echo(json.dumps(out))
    else:
        from adapters import render

        con = render.console()
        if out["ok"]:
            render.print_outcome(out, con)
        else:
            if out["events"]:
                con.print(f"recorded: {', '.join(out['events'])}", markup=False)
            typer.echo(f"error: {out['error']['message']} [{out['error']['code']}]", err=True)
    if not out["ok"]:
        raise typer.Exit(exit_code(out["error"]["code"]))


def run_command(do: str, workspace: str, flags: dict[str, str | None], actor: str, role: str,
                idempotency_key: str | None, reason: str | None, preview: bool = False) -> None:
    from adapters.scenario import PEOPLE_ROLES, outcome
    from adapters.app import catch_up
    check_workspace(workspace)
    try:
        _check_id(idempotency_key, "--idempotency-key")
        if role not in PEOPLE_ROLES:
            raise Invalid(f"--role must be one of {', '.join(PEOPLE_ROLES)}")
        who = parse_actor({"id": actor, "role": role})
        if reason is not None and len(reason) > 500:
            raise Invalid("--reason: at most 500 characters")
        command = build_command(do, flags)
    except Invalid as e:
        fail("invalid_request", str(e))
    except LedgerError as e:
        refuse(e)
    with open_ledger() as ledger:
        try:
            if preview:
                result = ledger.preview(workspace, command, who, channel="cli")
            else:
                result = ledger.handle(workspace, command, who, channel="cli", idempotency_key=idempotency_key,
                                       reason=reason)
        except LedgerError as e:
            refuse(e)
        if result.events or result.due_events:
            catch_up(ledger)
        previewed = result.subscription if preview and result.ok else None
        emit(outcome(ledger, workspace, "preview" if preview else do, result.error, result.events,
                     result.due_events, result.replayed, previewed))


# ------------------------------------------------------------------ domain commands

WORKSPACE = inspect.Parameter("workspace", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=Annotated[str, typer.Argument(help="Workspace id.", show_default=False)])
COMMON = [
    inspect.Parameter("actor", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_ACTOR,
                      annotation=Annotated[str, typer.Option(help="Who does it (actor id).")]),
    inspect.Parameter("role", inspect.Parameter.KEYWORD_ONLY, default="admin",
                      annotation=Annotated[str, typer.Option(help="owner, admin, billing_admin or member.")]),
    inspect.Parameter("idempotency_key", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[str | None, typer.Option(help="A repeat returns the first result.")]),
    inspect.Parameter("reason", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[str | None, typer.Option(help="Why (kept on the events).")]),
    inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonFlag),
]


def _flag(name: str, required: bool) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=... if required else None,
        annotation=Annotated[str | None, typer.Option(help=HELP.get(name, name), show_default=False,
                                                      metavar="INT" if name in INT_FLAGS else "TEXT")],
    )


def _domain_command(do: str) -> Callable[..., None]:
    fields = COMMANDS[do].model_fields

    def command(workspace: str, *, actor: str, role: str, idempotency_key: str | None, reason: str | None,
                json_output: bool, **flags: str | None) -> None:
        use_json(json_output)
        run_command(do, workspace, flags, actor, role, idempotency_key, reason)

    params = [_flag(n, f.is_required() or n in NULLABLE) for n, f in fields.items()]
    command.__signature__ = inspect.Signature([WORKSPACE, *params, *COMMON])  # type: ignore[attr-defined]
    command.__name__ = do.replace("-", "_")
    return command


for _name in COMMANDS:
    app.command(_name, help=COMMAND_HELP.get(_name, _name))(_domain_command(_name))


def _preview(workspace: str, *, do: str, actor: str, role: str, json_output: bool, **flags: str | None) -> None:
    use_json(json_output)
    if do not in COMMANDS:
        fail("invalid_request", f"--do: unknown command {do[:40]!r}; known: {', '.join(sorted(COMMANDS))}")
    run_command(do, workspace, flags, actor, role, None, None, preview=True)


_preview.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    WORKSPACE,
    inspect.Parameter("do", inspect.Parameter.KEYWORD_ONLY, default=...,
                      annotation=Annotated[str, typer.Option(help="The command to preview.")]),
    *[_flag(n, False) for n in ALL_FLAGS],
    *[p for p in COMMON if p.name not in ("idempotency_key", "reason")],  # a preview records nothing
])
app.command("preview", help="Show what COMMAND would record and invoice now (R25). Records nothing.")(_preview)


# ------------------------------------------------------------------ reading and time


@app.command()
def show(workspace: Annotated[str, typer.Argument(help="Workspace id.")], json_output: JsonFlag = False) -> None:
    """Show a workspace's plan, period, credits, balances and open invoice (the plan_state read model)."""
    use_json(json_output)
    check_workspace(workspace)
    state = _plan_state(workspace)
    if state is None:
        fail("not_found", f"{workspace}: no such workspace")
    if OUTPUT.json:
        typer.echo(json.dumps(state))
        return
    from adapters import render

    render.console().print(render.state_table(state))


def _plan_state(workspace: str) -> dict[str, Any] | None:
    """The workspace's plan_state document once the read models are caught up: read at once when
    they already are (adapters/current_read.py), else through the ledger and its projections."""
    from adapters import current_read
    from adapters.settings import database_url, eventsourcing_env
    from domain.catalog import load_catalog

    opts = _opts()
    with _bad_options():  # what open_ledger refuses before it opens anything
        cli_clock()
        load_catalog(opts.catalog)
        env = eventsourcing_env(database_url(opts.db))
    found = current_read.plan_state(env, workspace)
    if found is not None:
        return found.state
    from adapters.app import read_models, refresh
    from projections.plan_state import read_plan_state

    with open_ledger() as ledger, read_models(ledger) as projections:
        refresh(projections)
        with projections.engine.connect() as conn:
            return read_plan_state(conn, workspace)


@app.command()
def advance(json_output: JsonFlag = False,
            loop: Annotated[bool, typer.Option("--loop", help="Keep advancing, every --interval seconds, until "
                                               "SIGTERM or SIGINT: the production scheduler.")] = False,
            interval: Annotated[float, typer.Option(help="Seconds between rounds with --loop.", min=0.1)] = 60.0,
            ) -> None:
    """Record every renewal, trial end, scheduled change and notice due by now (system clock).
    Only workspaces with something due are loaded (the due index)."""
    import signal
    import threading

    use_json(json_output)
    stop = threading.Event()
    if loop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    with open_ledger() as ledger:
        while True:
            try:
                _advance_round(ledger)
            except LedgerError as e:
                if not loop:
                    refuse(e)
                typer.echo(json.dumps({"ok": False, "error": e.as_dict()}) if OUTPUT.json
                           else f"error: {e.message} [{e.code}]", err=True)
            if not loop or stop.wait(interval):
                break


def _advance_round(ledger: Ledger) -> None:
    from adapters.app import catch_up
    from projections.views import event_types, iso

    done = ledger.advance()
    if done:
        catch_up(ledger)
    at = iso(ledger.clock.now())
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": True, "at": at, "due": {ws: event_types(ev) for ws, ev in done.items()}}))
        return
    if not done:
        typer.echo(f"nothing due at {at}")
    for ws, events in done.items():
        typer.echo(f"{ws}: {', '.join(event_types(events))}")


# ------------------------------------------------------------------ scenarios, catalogs, demo


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(help="Scenario JSON file.", show_default=False)],
    db: Annotated[str | None, typer.Option(help="Database URL (default: a fresh throwaway SQLite).")] = None,
) -> None:
    """Run a scenario: one JSON line per step; exit 0 if every expect holds, 1 if one fails, 2 if invalid."""
    from adapters.scenario import run_scenario
    _, code = run_scenario(file, db or _opts().db, on_step=lambda out: typer.echo(json.dumps(out)))
    raise typer.Exit(code)


@catalog_app.command("check")
def catalog_check(file: Annotated[str, typer.Argument(help="Catalog TOML file (or a built-in name).")],
                  json_output: JsonFlag = False) -> None:
    """Validate a catalog file and summarise it."""
    from domain.catalog import CatalogError, load_catalog
    use_json(json_output)
    try:
        catalog = load_catalog(file)
    except CatalogError as e:
        if OUTPUT.json:
            fail(getattr(e, "code", "invalid_catalog"), str(e))
        typer.echo(f"invalid catalog: {e}", err=True)
        raise typer.Exit(2) from None
    summary = {
        "ok": True, "catalog": catalog.id, "version": catalog.version, "currency": catalog.currency,
        "plans": [p.id for p in catalog.plans], "addons": [a.id for a in catalog.addons],
        "credit_packs": [c.id for c in catalog.credit_packs], "policy": catalog.policy.model_dump(mode="json"),
    }
    if OUTPUT.json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"ok: catalog {catalog.id} version {catalog.version} ({catalog.currency})")
    for plan in catalog.plans:
        prices = ", ".join(f"{v}/{k}" for k, v in plan.prices.items()) or (
            f"{len(plan.tiers)} tiers" if plan.tiers else plan.kind)
        typer.echo(f"  plan {plan.id}: {plan.name}, {prices}")
    for addon in catalog.addons:
        typer.echo(f"  add-on {addon.id}: {', '.join(f'{v}/{k}' for k, v in addon.prices.items())}")
    for pack in catalog.credit_packs:
        typer.echo(f"  credit pack {pack.id}: {pack.credits:,} for {pack.price}")
    policy = catalog.policy
    typer.echo(f"  policy: proration={policy.proration}, downgrade={policy.downgrade_timing}, "
               f"upgrade credit={policy.upgrade_credit}")


@app.command()
def demo(db: Annotated[str | None, typer.Option(help="Database URL, best empty (default: a fresh ./subledger-demo.db).")]
         = None, json_output: JsonFlag = False) -> None:
    """Narrate the seed examples (forms, workspace, operations) on a test clock."""
    use_json(json_output)
    from adapters.demo import run_demo

    raise typer.Exit(run_demo(db or _opts().db, as_json=OUTPUT.json))


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
    main()
