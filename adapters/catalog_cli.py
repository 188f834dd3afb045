"""`subledger catalog check FILE`: validate a catalog file (docs/catalogs.md) and summarise it.

Mounted by adapters/cli.py. A catalog that cannot be used exits 2 (`invalid_catalog`, or
`catalog_conflict` for an id and version reused with other content: a built-in's, or with a
database one that ledger recorded), before any ledger records with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.cli_output import OUTPUT, JsonFlag, fail, use_json

if TYPE_CHECKING:
    from domain.catalog import Catalog

catalog_app = typer.Typer(help="Catalog files (docs/catalogs.md).", no_args_is_help=True)


def _check_against_the_ledger(catalog: Catalog) -> None:
    """With `--db` given, the catalogs that ledger recorded are checked too: a file reusing a
    recorded id and version with other content is refused (catalog_conflict). Only then: a check
    of a file stays offline wherever $SUBLEDGER_DB points. A SQLite file that does not exist
    recorded nothing, and is not created."""
    from adapters import cli
    from adapters.settings import READ_ONLY, eventsourcing_env
    from domain.errors import LedgerError

    db = cli._opts().db  # noqa: SLF001 (the explicit --db of this run)
    if not db:
        return
    try:
        env = eventsourcing_env(db)
    except ValueError as e:
        fail("invalid_request", f"--db: {e}")
    sqlite_file = env.get("SQLITE_DBNAME", "")
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite" and not env.get(READ_ONLY) \
            and not Path(sqlite_file).is_file():
        return
    with cli.open_ledger() as ledger:
        try:
            ledger.check_published(catalog)
        except LedgerError as e:
            fail(e.code, e.message)


@catalog_app.command("check")
def catalog_check(file: Annotated[str, typer.Argument(help="Catalog TOML file (or a built-in name).")],
                  json_output: JsonFlag = False) -> None:
    """Validate a catalog file and summarise it."""
    from domain.catalog import CatalogError, load_catalog
    use_json(json_output)
    try:
        catalog = load_catalog(file)
    except CatalogError as e:
        fail(getattr(e, "code", "invalid_catalog"), f"invalid catalog: {e}")
    _check_against_the_ledger(catalog)
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
