"""The write side of the HTTP API: one POST per domain command, and its preview with a quote.

`POST /v1/workspaces/{workspace}/{command}`: the body is the domain's command model (domain/
commands.py) plus `reason` and `quote`; only an admin or billing_admin token of the workspace
may send it (R1, R2), recorded through channel `api` under the token's id and role.
`POST /v1/workspaces/{workspace}/preview/{command}`: the body is the command model itself;
admins, billing admins and support (who may preview, never commit) get the preview and a quote.
Every POST takes `Idempotency-Key` (adapters/http/idempotency.py). docs/http.md has the contract.
"""

import inspect
import json
from decimal import Decimal
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model

from adapters.feed import message
from adapters.http import idempotency
from adapters.http.auth import Caller, require_change
from adapters.http.json_bodies import CallerFirst
from adapters.http.problems import documented, problem_of
from adapters.http.quotes import PATTERN as QUOTE_PATTERN
from adapters.http.test_clock import Following
from adapters.tokens import Principal
from domain.commands import COMMANDS, ID, Actor, Command, check_new_workspace_id
from domain.errors import LedgerError
from domain.ledger import Ledger, Result
from domain.money import fmt
from domain.quotes import invoice_terms
from projections.store import dumps
from projections.views import invoice_view, outcome_view, plan_state

SUMMARY = {
    "subscribe": "Start a plan (R15)", "change-plan": "Upgrade now or schedule a downgrade (R11-R18)",
    "cancel-change": "Keep the current plan (R17)", "set-seats": "Change paid seats (R21)",
    "set-members": "Report active members (R24)", "report-storage": "Report storage used (R6, R19)",
    "set-storage-addon": "Add, switch or remove the storage add-on (R22)",
    "buy-ai-credits": "Buy an AI credit pack (R23)", "consume-ai-credits": "Spend AI credits (R23)",
    "record-usage": "Record operations used", "buy-operations": "Buy extra operations",
    "add-payment-method": "Add a payment method", "remove-payment-method": "Remove a payment method",
    "pay-invoice": "Pay open invoices (R8)", "set-contract": "Set or end a custom contract (R9)",
    "cancel": "Cancel at the period end",
}
PREVIEW_ROLES = frozenset({"support"})
"""Besides the workspace's admins: roles that may preview (a read of a hypothetical change)."""


class EventOut(BaseModel):
    """A recorded (or, in a preview, would-be) event, as the event feed publishes it."""

    notification_id: int | None
    type: str
    workspace: str | None
    originator_id: str
    version: int
    timestamp: str
    command_id: str | None
    actor: dict[str, str] | None
    channel: str | None
    fields: dict[str, Any]


class InvoiceOut(BaseModel):
    id: str
    purpose: str
    lines: list[dict[str, Any]]
    subtotal: str
    credit_applied: str
    amount_due: str
    currency: str


class CommandOut(BaseModel):
    """What a command recorded. `position` is the notification id of its last event: pass it to a
    read as `min_position` to read your write."""

    ok: bool
    workspace: str
    command: str
    command_id: str | None
    position: int | None
    replayed: bool
    events: list[EventOut]
    due_events: list[EventOut]
    invoices: list[InvoiceOut]
    state: dict[str, Any]


class QuoteOut(BaseModel):
    id: str
    quoted_at: str
    expires_at: str
    catalog_hash: str
    workspace_version: int


class PreviewOut(BaseModel):
    """What the command would record now (R25), what it would leave, and a quote to commit it with."""

    ok: bool
    workspace: str
    command: str
    events: list[EventOut]
    due_events: list[EventOut]
    invoices: list[InvoiceOut]
    amount_due: str
    currency: str
    outcome: dict[str, Any]
    quote: QuoteOut


ERRORS = documented(400, 401, 402, 403, 404, 409, 422, 423, 503)
WorkspacePath = Annotated[str, Path(pattern=ID, max_length=64, description="Workspace id.")]
IdempotencyKey = idempotency.KeyHeader
router = APIRouter(prefix="/v1/workspaces", dependencies=[Following], route_class=CallerFirst)


def ledger_of(request: Request) -> Ledger:
    return request.app.state.ledger


# ------------------------------------------------------------------ rendering


def events_view(ledger: Ledger, workspace: str, events: list[Any]) -> list[dict[str, Any]]:
    """Events as JSON: Decimals as strings, instants ISO-8601 UTC (the feed's message shape)."""
    return [json.loads(dumps(message(e, position, workspace)))
            for e, position in zip(events, ledger.positions(events))]


def state_after(ledger: Ledger, result: Result) -> dict[str, Any]:
    sub = result.subscription if result.subscription is not None else ledger.get(result.workspace_id)
    return plan_state(sub, ledger.catalog_for(sub))


def command_document(ledger: Ledger, name: str, result: Result) -> dict[str, Any]:
    recorded = result.events or result.due_events
    return {
        "ok": result.ok, "workspace": result.workspace_id, "command": name, "command_id": result.command_id,
        "position": ledger.position_of(recorded) if recorded else None, "replayed": result.replayed,
        "events": events_view(ledger, result.workspace_id, result.events),
        "due_events": events_view(ledger, result.workspace_id, result.due_events),
        "invoices": [invoice_view(e) for e in result.invoices()], "state": state_after(ledger, result),
    }


def command_response(request: Request, name: str, result: Result) -> JSONResponse:
    """200 with what was recorded, or the refusal as problem+json carrying the same document
    (a failed payment, 402, still recorded its invoice and the failure)."""
    ledger = ledger_of(request)
    document = command_document(ledger, name, result)
    headers = {idempotency.REPLAYED: "true"} if result.replayed else None
    if result.error is None:
        return JSONResponse(document, headers=headers)
    document.pop("ok")
    refused = problem_of(result.error, request, **document)
    if headers:
        refused.headers.update(headers)
    return refused


def preview_document(request: Request, name: str, command: Command, result: Result) -> dict[str, Any]:
    ledger = ledger_of(request)
    sub = result.subscription
    catalog = ledger.catalog_for(sub)
    invoices = result.invoices()
    quote = request.app.state.quotes.create(result.workspace_id, command, ledger.clock.now(), catalog.content_hash,
                                            result.version, invoice_terms(result.events))
    return {
        "ok": True, "workspace": result.workspace_id, "command": name,
        "events": events_view(ledger, result.workspace_id, result.events),
        "due_events": events_view(ledger, result.workspace_id, result.due_events),
        "invoices": [invoice_view(e) for e in invoices],
        "amount_due": fmt(sum((e.amount_due for e in invoices), Decimal(0)), catalog.currency),
        "currency": catalog.currency, "outcome": outcome_view(sub, catalog), "quote": quote,
    }


# ------------------------------------------------------------------ who


def change_access(cls: type[Command]) -> Callable[..., Actor]:
    """A route's dependency, so that 401/403 come before the body is validated (and say nothing of it)."""
    def access(caller: Caller, workspace: Annotated[str, Path()]) -> Actor:
        return require_change(caller, workspace, sales_only=cls.sales_only)
    return access


def preview_access(caller: Caller, workspace: Annotated[str, Path()]) -> Actor:
    return preview_actor(caller, workspace)


def preview_actor(caller: Principal, workspace: str) -> Actor:
    """Admins preview as themselves; support previews what a billing admin's command would do."""
    if caller.changes(workspace):
        return Actor(id=caller.token_id, role=caller.role)  # type: ignore[arg-type]
    if caller.role in PREVIEW_ROLES:
        return Actor(id=caller.token_id, role="billing_admin")
    raise LedgerError("forbidden", f"a token with role {caller.role} may not preview changes to workspace {workspace}")


# ------------------------------------------------------------------ routes


def request_model(cls: type[Command]) -> type[Command]:
    """The command's own model with the two things a request adds: why, and the quote it commits."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{cls.__name__}Request", __base__=cls, __doc__=f"{SUMMARY.get(cls.name, cls.name)}: the {cls.__name__} "
        "command, with an optional reason (kept on the events) and quote (from a preview).",
        reason=(str | None, Field(None, max_length=500, description="Why (kept on the events).")),
        quote=(str | None, Field(None, pattern=QUOTE_PATTERN, description="A quote id from the preview: commit "
                                 "exactly its lines, or be refused quote_stale.")),
    )


def _body(model: type[BaseModel]) -> tuple[Any, bool]:
    """The body parameter's type, and whether it is required: commands without required fields
    may be sent without a body."""
    if any(f.is_required() for f in model.model_fields.values()):
        return Annotated[model, Body()], True
    return Annotated[model | None, Body()], False


def _require_body(run: Callable[..., JSONResponse]) -> None:
    """Drop the body's default from the signature FastAPI reads (its parameters are keyword-only)."""
    signature = inspect.signature(run)
    run.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(default=inspect.Parameter.empty) if p.name == "body" else p for p in signature.parameters.values()])


def command_route(name: str, cls: type[Command]) -> Callable[..., JSONResponse]:
    model = request_model(cls)
    body_type, body_required = _body(model)

    def run(request: Request, *, caller: Caller, actor: Annotated[Actor, Depends(change_access(cls))],
            workspace: WorkspacePath, body: body_type = None,  # type: ignore[valid-type]
            quote: Annotated[str | None, Query(pattern=QUOTE_PATTERN, description="Same as the body's quote.")] = None,
            idempotency_key: IdempotencyKey = None) -> JSONResponse:
        check_new_workspace_id(workspace)
        sent = body if body is not None else model()
        if quote is not None and sent.quote not in (None, quote):
            raise LedgerError("invalid_request", "two different quotes: give it in the body or the query, once")
        quote_id = quote or sent.quote
        described = {"path": request.url.path, "body": sent.model_dump(mode="json", exclude={"quote"}),
                     "query": {"quote": quote_id}}
        replay = idempotency.replay_or_conflict(request, caller, idempotency_key, described)
        if replay is not None:
            return replay
        command = cls.model_validate(sent.model_dump(exclude={"reason", "quote"}))
        ledger = ledger_of(request)

        def handle(key: str | None) -> Result:
            return ledger.handle(workspace, command, actor, channel="api", idempotency_key=key, reason=sent.reason,
                                 pin=pin)

        try:
            pin = request.app.state.quotes.pin(quote_id, workspace, command, ledger.clock.now()) if quote_id else None
            result = idempotency.handle_once(ledger, workspace, idempotency.scope_of(caller), idempotency_key,
                                             handle) if idempotency_key else handle(None)
            response = command_response(request, name, result)
        except LedgerError as e:
            response = problem_of(e, request)
        return idempotency.remember(request, caller, idempotency_key, described, response)

    if body_required:
        _require_body(run)
    run.__name__ = "command_" + name.replace("-", "_")
    run.__doc__ = (f"{SUMMARY.get(name, name)}. Admin or billing_admin token of the workspace. Refusals are "
                   "problem+json and record nothing (a declined payment records the invoice and the failure: 402).")
    return run


def preview_route(name: str, cls: type[Command]) -> Callable[..., JSONResponse]:
    body_type, body_required = _body(cls)

    def run(request: Request, *, caller: Caller, actor: Annotated[Actor, Depends(preview_access)],
            workspace: WorkspacePath, body: body_type = None,  # type: ignore[valid-type]
            idempotency_key: IdempotencyKey = None) -> JSONResponse:
        check_new_workspace_id(workspace)
        command = body if body is not None else cls()
        described = {"path": request.url.path, "body": command.model_dump(mode="json")}
        replay = idempotency.replay_or_conflict(request, caller, idempotency_key, described)
        if replay is not None:
            return replay
        ledger = ledger_of(request)
        try:
            result = ledger.preview(workspace, command, actor, channel="api")
            if result.error is not None:
                raise result.error
            response = JSONResponse(preview_document(request, name, command, result))
        except LedgerError as e:
            response = problem_of(e, request)
        return idempotency.remember(request, caller, idempotency_key, described, response)

    if body_required:
        _require_body(run)
    run.__name__ = "preview_" + name.replace("-", "_")
    run.__doc__ = (f"Preview {name} (R25): the lines, amount due, resulting state and next renewal, and a quote "
                   "to commit exactly these lines. Admin, billing_admin (own workspace) or support token; records "
                   "nothing.")
    return run


for _name, _cls in COMMANDS.items():
    router.add_api_route(f"/{{workspace}}/preview/{_name}", preview_route(_name, _cls), methods=["POST"],
                         tags=["previews"], summary=f"Preview {_name}", response_model=None,
                         responses={200: {"model": PreviewOut}, **ERRORS})
    router.add_api_route(f"/{{workspace}}/{_name}", command_route(_name, _cls), methods=["POST"],
                         tags=["commands"], summary=SUMMARY.get(_name, _name), response_model=None,
                         responses={200: {"model": CommandOut}, **ERRORS})
