"""Bearer tokens on every request (adapters/tokens.py); refusals are 401 and 403 and record nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.tokens import Principal, TokenStore
from domain.commands import Actor
from domain.errors import LedgerError

COOKIE = "subledger_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
bearer = HTTPBearer(auto_error=False, description="An API token from `subledger tokens create`.")


def tokens(request: Request) -> TokenStore:
    return request.app.state.tokens


def principal(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The token's principal, or 401 `unauthenticated`. The console's cookie is a credential for
    reads only: a write needs the bearer header, which no other site can make a browser send
    (no cross-site request forgery through a signed-in console)."""
    cookie = request.cookies.get(COOKIE) if request.method in SAFE_METHODS else None
    token = credentials.credentials if credentials else cookie
    if not token:
        raise LedgerError("unauthenticated", "send an API token: Authorization: Bearer <token>")
    found = tokens(request).authenticate(token)
    if found is None:
        raise LedgerError("unauthenticated", "the API token is unknown or revoked")
    return found


Caller = Annotated[Principal, Depends(principal)]


def require_read(caller: Principal, workspace_id: str) -> None:
    if not caller.reads(workspace_id):
        raise LedgerError("forbidden", f"a token with role {caller.role} may not read workspace {workspace_id}")


def require_change(caller: Principal, workspace_id: str, *, sales_only: bool = False) -> Actor:
    """The actor a change is recorded under: the token's id and role (R2 is then the domain's).
    A contract (`sales_only`) is sales' change, on any workspace; the workspace's admins reach
    the domain, which refuses them (R9)."""
    if sales_only and caller.role == "sales":
        return Actor(id=caller.token_id, role="sales")
    if not caller.changes(workspace_id):
        raise LedgerError("forbidden", f"a token with role {caller.role} may not change workspace {workspace_id}")
    return Actor(id=caller.token_id, role=caller.role)  # type: ignore[arg-type]


def require_role(caller: Principal, *roles: str) -> None:
    if caller.role not in roles:
        raise LedgerError("forbidden", f"a token with role {caller.role} may not do this: it needs {' or '.join(roles)}")


def operator(caller: Caller) -> Principal:
    """A dependency, so that 401/403 come before the body is validated."""
    require_role(caller, "operator")
    return caller


Operator = Annotated[Principal, Depends(operator)]
"""The caller of a route for operator tokens only (tokens, webhooks, the test clock)."""
