"""Token management over HTTP, for operator tokens only: create (the secret is shown once),
list, revoke. The same store as `subledger tokens` (adapters/tokens.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.http import idempotency
from adapters.http.auth import Operator, tokens
from adapters.http.json_bodies import CallerFirst
from adapters.http.pages import PageQuery, paginate
from adapters.http.reads import jsonable
from adapters.http.problems import documented
from adapters.tokens import ROLES, TokenStore


Store = Annotated[TokenStore, Depends(tokens)]
IdempotencyKey = idempotency.KeyHeader
router = APIRouter(prefix="/v1/tokens", tags=["tokens"], route_class=CallerFirst,
                   responses=documented(400, 401, 403, 404, 503))


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal[ROLES]  # type: ignore[valid-type]  # each of the roles, in the schema
    workspace: str | None = Field(None, max_length=200, description="The workspace of an admin, billing_admin or "
                                  "member token; none for the others.")
    label: str | None = Field(None, max_length=200, description="A note on whose token this is.")


@router.post("", status_code=201)
def create_token(caller: Operator, body: NewToken, store: Store, request: Request,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A new token. `token` is the secret: it is shown in this response only (its hash is kept);
    a retry with the same `Idempotency-Key` answers with the same token, its secret null."""
    def create() -> JSONResponse:
        principal, token = store.create(body.role, body.workspace, body.label)
        return JSONResponse({"object": "token", "id": principal.token_id, "token": token, "role": principal.role,
                             "workspace": principal.workspace_id, "label": body.label}, status_code=201)
    described = {"path": request.url.path, "body": body.model_dump(mode="json")}
    return idempotency.once(request, caller, idempotency_key, described, create, withheld="token")


@router.get("")
def list_tokens(caller: Operator, store: Store, chosen: PageQuery) -> dict[str, Any]:
    """Every token, oldest first, with its role, workspace and revocation; never the secrets."""
    rows = [{"object": "token", **row} for row in store.list()]
    return jsonable(paginate(rows, lambda r: r["id"], chosen))


@router.delete("/{token_id}")
def revoke_token(caller: Operator, token_id: Annotated[str, Path(max_length=100)], store: Store) -> dict[str, Any]:
    """Revoke a live token: it is refused (401) from now on. 404 if there is no live token of that id."""
    store.revoke(token_id)
    return {"object": "token", "id": token_id, "revoked": True}
