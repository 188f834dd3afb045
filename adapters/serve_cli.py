"""`subledger serve` (the HTTP API) and `subledger tokens` (its bearer tokens).

Mounted by adapters/cli.py; FastAPI and uvicorn are imported only when the server starts."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from adapters.cli_output import OUTPUT, JsonFlag, print_json, use_json
from domain.text import one_line

tokens_app = typer.Typer(help="API tokens for `subledger serve`: create, list, revoke.", no_args_is_help=True)


def _database() -> str:
    """The --db URL (else $SUBLEDGER_DB, else the default), checked as every other command
    checks it: one that cannot be used as written is bad input (exit 2), not an internal error."""
    from adapters import cli  # the shared --db/--catalog options live there
    from adapters.settings import database_url
    return cli.checked_db(database_url(cli._opts().db))


def serve(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1) -> None:
    """Serve the HTTP API (OpenAPI at /docs) and the console on the ledger of --db."""
    import uvicorn

    from adapters.cli import _opts
    opts = _opts()
    os.environ["SUBLEDGER_DB"] = _database()
    os.environ["SUBLEDGER_CATALOG"] = str(opts.catalog)
    uvicorn.run("adapters.http.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


@tokens_app.command("create")
def create(role: Annotated[str, typer.Option(help="admin, billing_admin, member, support, service, operator or sales.")],
           workspace: Annotated[str | None, typer.Option(help="The workspace of an admin, billing_admin or "
                                                         "member token.")] = None,
           label: Annotated[str | None, typer.Option(help="A note on whose token this is.")] = None,
           json_output: JsonFlag = False) -> None:
    """Make a token and print it once: only its hash is kept."""
    from adapters.tokens import TokenStore
    use_json(json_output)
    store = TokenStore(_database())
    try:
        principal, token = store.create(role, workspace, label)
    finally:
        store.close()
    if OUTPUT.json:
        print_json({"ok": True, "token": token, "id": principal.token_id, "role": principal.role,
                    "workspace": principal.workspace_id})
    else:
        typer.echo(f"{token}\n(id {principal.token_id}, role {principal.role}"
                   f"{', workspace ' + principal.workspace_id if principal.workspace_id else ''}; "
                   "shown once: store it now)")


@tokens_app.command("list")
def list_tokens(json_output: JsonFlag = False) -> None:
    """Every token's id, role, workspace and state (never the secret)."""
    from adapters.tokens import TokenStore
    use_json(json_output)
    store = TokenStore(_database())
    try:
        rows = store.list()
    finally:
        store.close()
    shown = [{**r, "created_at": r["created_at"].isoformat(),
              "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None} for r in rows]
    if OUTPUT.json:
        print_json({"ok": True, "tokens": shown})
        return
    for r in shown:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "live"
        typer.echo(f"{r['id']}  {r['role']:<13} {r['workspace_id'] or '-':<20} {state}  {one_line(r['label'] or '')}")


@tokens_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id (tok_...).")],
           json_output: JsonFlag = False) -> None:
    """Revoke a token: every later request with it is refused (401)."""
    from adapters.tokens import TokenStore
    use_json(json_output)
    store = TokenStore(_database())
    try:
        store.revoke(token_id)
    finally:
        store.close()
    if OUTPUT.json:
        print_json({"ok": True, "revoked": token_id})
    else:
        typer.echo(f"revoked {token_id}")
