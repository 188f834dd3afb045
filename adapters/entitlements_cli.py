"""`subledger entitlements`, `check-upload` and `check-feature`: may this workspace do X now? (R19)

Mounted by adapters/cli.py. `entitlements` prints the entitlements read model; the checks decide
with the same function (domain/entitlements.py) on the workspace as of now, boundaries passed
since its last event included, and record nothing: ok exits 0, a refusal 1, bad input 2.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.cli_output import OUTPUT, fail, use_json
from domain.commands import GIGABYTES
from domain.errors import LedgerError

if TYPE_CHECKING:
    from domain import entitlements as rules
    from domain.catalog import Catalog

Workspace = Annotated[str, typer.Argument(help="Workspace id.", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
FEATURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")


def _cli() -> Any:
    from adapters import cli  # the shared options, ledger opening and failure exits live there
    return cli


def _workspace(cli: Any, workspace: str) -> None:
    try:
        cli._check_id(workspace, "workspace id")
    except cli.Invalid as e:
        fail("invalid_request", str(e))


def entitlements(workspace: Workspace, json_output: JsonFlag = False) -> None:
    """Features, limits, usage, read-only storage and webhooks of a workspace (the entitlements read model)."""
    from projections.entitlements import read_entitlements
    from adapters.app import read_models
    cli = _cli()
    use_json(json_output)
    _workspace(cli, workspace)
    with cli.open_ledger() as ledger, read_models(ledger) as projections:
        projections.catch_up()
        with projections.engine.connect() as conn:
            found = read_entitlements(conn, workspace)
    if found is None:
        fail("not_found", f"{workspace}: no such workspace")
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": True, **found}))
        return
    limits = ", ".join(f"{k} {v}" for k, v in found["limits"].items() if v is not None)
    usage = ", ".join(f"{k} {v}" for k, v in found["usage"].items())
    typer.echo(f"{found['workspace']}: {found['plan'] or 'no plan'} ({found['status']})")
    typer.echo(f"  features: {', '.join(found['features']) or 'none'}")
    typer.echo(f"  locked:   {', '.join(found['locked_features']) or 'none'}")
    typer.echo(f"  limits:   {limits or 'none'}")
    typer.echo(f"  usage:    {usage}")
    typer.echo(f"  storage:  {'READ-ONLY (uploads refused)' if found['storage_read_only'] else 'writable'}")
    typer.echo(f"  webhooks: {'firing' if found['webhooks_firing'] else 'not firing (configuration kept)'}")


def _now(cli: Any, workspace: str) -> tuple[rules.Entitlements, Catalog]:
    """The workspace's entitlements at the ledger's now, read from its events (nothing recorded),
    and its catalog."""
    from domain import entitlements as rules
    with cli.open_ledger() as ledger:
        sub = ledger.get(workspace)
        if sub is None:
            fail("not_found", f"{workspace}: no such workspace")
        catalog = ledger.catalog_for(sub)
        return rules.entitlements(rules.as_of(sub, catalog, ledger.clock.now()), catalog), catalog


def _answer(cli: Any, check: Any, out: dict[str, Any], ok_text: str) -> None:
    try:
        check()
    except LedgerError as e:
        fail(e.code, e.message)
    if OUTPUT.json:
        typer.echo(json.dumps({"ok": True, **out}))
    else:
        typer.echo(f"ok: {ok_text}")


def check_upload(workspace: Workspace,
                 gb: Annotated[str, typer.Option(help="Size of the upload in GB (e.g. 2.5).", show_default=False)],
                 json_output: JsonFlag = False) -> None:
    """May WORKSPACE upload GB more now? ok, or storage_limit_exceeded (R19: over the limit is read-only)."""
    from domain import entitlements as rules
    cli = _cli()
    use_json(json_output)
    _workspace(cli, workspace)
    if not GIGABYTES.fullmatch(gb.strip()) or Decimal(gb) <= 0:
        fail("invalid_request", f"--gb: {gb[:40]!r} is not a positive number of GB (digits 0-9, e.g. 2.5)")
    size = Decimal(gb.strip())
    ent, _ = _now(cli, workspace)
    free = max(Decimal(ent.storage_limit_gb) - ent.storage_used_gb, Decimal(0))
    _answer(cli, lambda: rules.check_upload(ent, size),
            {"workspace": workspace, "gb": format(size, "f"), "storage_used_gb": format(ent.storage_used_gb, "f"),
             "storage_limit_gb": ent.storage_limit_gb},
            f"{workspace} may upload {size} GB ({free} of {ent.storage_limit_gb} GB free)")


def check_feature(workspace: Workspace,
                  feature: Annotated[str, typer.Argument(help="Feature name (e.g. webhooks).", show_default=False)],
                  json_output: JsonFlag = False) -> None:
    """May WORKSPACE use FEATURE now? ok, or plan_locked (R19)."""
    from domain import entitlements as rules
    cli = _cli()
    use_json(json_output)
    _workspace(cli, workspace)
    if not FEATURE.fullmatch(feature):
        fail("invalid_request", f"feature {feature[:40]!r} is not a feature name (letters, digits, _ . : / -)")
    ent, catalog = _now(cli, workspace)
    _answer(cli, lambda: rules.check_feature(ent, feature, catalog),
            {"workspace": workspace, "feature": rules.feature_name(feature), "plan": ent.plan},
            f"{workspace} may use {rules.feature_name(feature)} ({ent.plan_name})")


def mount(app: typer.Typer) -> None:
    app.command("entitlements")(entitlements)
    app.command("check-upload")(check_upload)
    app.command("check-feature")(check_feature)
