"""Webhook endpoints over HTTP, for operator tokens: the same operations as `subledger webhooks`
(add, list, remove, dead letters, retry); delivery stays with `subledger webhooks deliver`.

Mounted by `create_app` with `app.include_router(webhooks_routes.router)`; the store is made on
first use and shares the app's database."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.http import idempotency
from adapters.http.auth import Operator, operator
from adapters.http.json_bodies import CallerFirst
from adapters.http.pages import PageQuery, paginate
from adapters.http.problems import documented
from adapters.webhooks import WebhookStore
from domain.commands import check_new_workspace_id

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=CallerFirst,
                   responses=documented(400, 401, 403, 404, 503))
IdempotencyKey = idempotency.KeyHeader
_made = threading.Lock()


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt workspace filter must not mean every workspace
    url: str = Field(max_length=2000, description="Where to POST: an http:// or https:// URL.")
    events: list[str] = Field(min_length=1, max_length=100,
                              description='Event types (e.g. "PlanUpgraded"), or ["*"] for all.')
    workspace: str | None = Field(default=None, description="Only this workspace's events.")

    @field_validator("workspace")
    @classmethod
    def _workspace_id(cls, workspace: str | None) -> str | None:
        return None if workspace is None else check_new_workspace_id(workspace)


def store(request: Request) -> WebhookStore:
    state = request.app.state
    with _made:
        if getattr(state, "webhooks", None) is None:
            from adapters.settings import eventsourcing_env
            state.webhooks = WebhookStore(eventsourcing_env(state.db))
    return state.webhooks  # type: ignore[no-any-return]


Store = Annotated[WebhookStore, Depends(store)]




def shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


@router.get("", dependencies=[Depends(operator)])
def list_endpoints(webhooks: Store, chosen: PageQuery) -> dict[str, Any]:
    """Live endpoints with their messages by status (never the secret), a page of them."""
    return paginate((shown(r) for r in webhooks.list_endpoints()), lambda r: r["id"], chosen)


@router.post("", status_code=201)
def add_endpoint(body: NewEndpoint, request: Request, webhooks: Store, caller: Operator,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Add an endpoint for the events recorded from now on; the signing secret is shown once (a
    retry with the same `Idempotency-Key` answers with the same endpoint, its secret null)."""
    ledger = request.app.state.ledger

    def add() -> JSONResponse:
        row = webhooks.add(body.url, ",".join(body.events), body.workspace,
                           head=lambda: ledger.recorder.max_notification_id() or 0)
        return JSONResponse({"id": row["id"], "secret": row["secret"], "url": row["url"],
                             "events": row["events"].split(","), "workspace": row["workspace"],
                             "since": row["since"]}, status_code=201)
    described = {"path": request.url.path, "body": body.model_dump(mode="json")}
    return idempotency.once(request, caller, idempotency_key, described, add, withheld="secret")


@router.delete("/{endpoint_id}", status_code=204, dependencies=[Depends(operator)])
def remove_endpoint(endpoint_id: str, webhooks: Store) -> Response:
    """Stop an endpoint; its pending and dead messages are dropped."""
    webhooks.remove(endpoint_id)
    return Response(status_code=204)


@router.get("/dead", dependencies=[Depends(operator)])
def dead_letters(webhooks: Store, chosen: PageQuery) -> dict[str, Any]:
    """Messages that failed too often or for too long, a page of them."""
    return paginate((shown(r) for r in webhooks.dead()), lambda r: r["msg_id"], chosen)


@router.post("/dead/{msg_id}/retry")
def retry_dead_letter(msg_id: str, webhooks: Store, request: Request, caller: Operator,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Queue a dead letter again: the dispatcher's next round sends it."""
    def retry() -> JSONResponse:
        webhooks.retry([msg_id])
        return JSONResponse({"queued": msg_id})
    return idempotency.once(request, caller, idempotency_key, {"path": request.url.path}, retry)
