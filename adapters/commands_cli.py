"""The domain commands as CLI subcommands (subscribe, change-plan, ... cancel) and `preview`.

Mounted by adapters/cli.py. Flags come from the command models in domain/commands.py, so the
CLI cannot drift from the domain: one subcommand per model, one flag per field, built here
with the signature typer reads. A command is checked (ids, role, flags) before the ledger is
opened, so bad input exits 2 without touching the database; a refusal records nothing, exit 1.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.cli_output import OUTPUT, JsonFlag, catch_up_after, exit_code, fail, refuse, use_json
from domain.commands import COMMANDS, Command, parse_actor, parse_command
from domain.errors import LedgerError

if TYPE_CHECKING:
    from types import ModuleType

DEFAULT_ACTOR = "cli-admin"
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


def _cli() -> ModuleType:
    from adapters import cli  # the shared options, ledger opening and id checks live there
    return cli


def _value(name: str, text: str | None) -> Any:
    """A flag's text as the command model expects it: whole numbers as int ('none', for null,
    is read by the model itself: domain/commands.py CLEARS)."""
    if text is None:
        return None
    if name in INT_FLAGS:
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip()):
            raise _cli().Invalid(f"--{name.replace('_', '-')}: {text[:40]!r} is not a whole number")
        return int(text)
    return text


def build_command(do: str, flags: dict[str, str | None]) -> Command:
    args = {name: _value(name, text) for name, text in flags.items() if text is not None}
    try:
        return parse_command(do, args)
    except LedgerError as e:
        raise _cli().Invalid(e.message) from None


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
    cli = _cli()
    cli.check_workspace(workspace)
    try:
        cli._check_id(idempotency_key, "--idempotency-key")
        if role not in PEOPLE_ROLES:
            raise cli.Invalid(f"--role must be one of {', '.join(PEOPLE_ROLES)}")
        who = parse_actor({"id": actor, "role": role})
        command = build_command(do, flags)
    except cli.Invalid as e:
        fail("invalid_request", str(e))
    except LedgerError as e:
        refuse(e)
    with cli.open_ledger() as ledger:
        try:
            if preview:
                result = ledger.preview(workspace, command, who, channel="cli")
            else:
                result = ledger.handle(workspace, command, who, channel="cli", idempotency_key=idempotency_key,
                                       reason=reason)
        except LedgerError as e:
            refuse(e)
        if result.events or result.due_events:
            catch_up_after(ledger)
        previewed = result.subscription if preview and result.ok else None
        after = result.subscription if not preview and result.ok else None  # not a later writer's state
        emit(outcome(ledger, workspace, "preview" if preview else do, result.error, result.events,
                     result.due_events, result.replayed, previewed, after))


# ------------------------------------------------------------------ the subcommands' signatures

WORKSPACE = inspect.Parameter("workspace", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=Annotated[str, typer.Argument(help="Workspace id.", show_default=False)])
COMMON = [
    inspect.Parameter("actor", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_ACTOR,
                      annotation=Annotated[str, typer.Option(help="Who does it (actor id).")]),
    inspect.Parameter("role", inspect.Parameter.KEYWORD_ONLY, default="admin",
                      annotation=Annotated[str, typer.Option(help="owner, admin, billing_admin, member, or sales (set-contract, R9).")]),
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


def mount(app: typer.Typer) -> None:
    """One subcommand per domain command, in domain/commands.py's order, then `preview`."""
    for name in COMMANDS:
        app.command(name, help=COMMAND_HELP.get(name, name))(_domain_command(name))
    app.command("preview", help="Show what COMMAND would record and invoice now (R25). Records nothing.")(_preview)
