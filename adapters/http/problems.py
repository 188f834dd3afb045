"""Errors as `application/problem+json` (RFC 9457), each carrying the ledger's stable code.

One table maps codes to HTTP statuses: bad input 400, no token 401, wrong role or workspace
403, unknown thing 404, a state that must change first 409, a failed payment 402, a locked
plan 423, any other rule refusal 422, the database down 503."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters import failures
from adapters.http.json_bodies import malformed, sent_as_json
from domain.errors import LedgerError
from domain.plain_errors import sentence

MEDIA_TYPE = "application/problem+json"
STATUS = {
    "invalid_request": 400, "invalid_catalog": 400, "catalog_conflict": 400, "unknown_plan": 400,
    "position_ahead": 400,
    "unauthenticated": 401,
    "forbidden": 403, "not_authorized": 403,
    "not_found": 404,
    "open_invoice": 409, "payment_pending": 409, "idempotency_conflict": 409, "concurrency_conflict": 409,
    "quote_stale": 409, "clock_conflict": 409, "payments_conflict": 409, "catalog_mismatch": 409,
    "not_subscribed": 409, "already_subscribed": 409, "no_open_invoice": 409, "no_pending_payment": 409,
    "payment_failed": 402, "payment_action_required": 402, "payment_method_required": 402,
    "plan_locked": 423,
    "unavailable": 503, "event_chain_broken": 503, "read_models_damaged": 503,
    "read_models_behind": 503,
    "internal_error": 500,
}
"""Every other code is a rule refusal: 422."""
log = logging.getLogger("subledger.http")


class Problem(BaseModel):
    """application/problem+json (RFC 9457) with the ledger's stable error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    rule: str | None = None
    instance: str | None = None


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route answers, for its OpenAPI entry: each a Problem. Any other 4xx (a body
    too large, 413) is one too, which also keeps FastAPI from listing its own 422 shape: bad input
    is answered 400 here (`invalid_request`), never 422 HTTPValidationError."""
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    refusal = {"model": Problem, "content": {MEDIA_TYPE: schema}, "description": "a refusal (problem+json)"}
    return {**{s: refusal for s in statuses}, "4XX": refusal}


@contextmanager
def reworded(words: Callable[[str], str]) -> Iterator[None]:
    """A refusal's message in the words of where it is shown (replay names command-line flags)."""
    try:
        yield
    except LedgerError as e:
        message = words(e.message)
        if message == e.message:
            raise
        raise LedgerError(e.code, message) from None


def status_of(code: str) -> int:
    return STATUS.get(code, 422)


def problem(code: str, message: str, *, status: int | None = None, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    error = LedgerError(code, message)
    body: dict[str, Any] = {"type": f"urn:subledger:error:{code}", "title": code.replace("_", " "),
                            "status": status or status_of(code), "detail": message, "code": code}
    if error.rule:
        body["rule"] = error.rule
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=headers)


def problem_of(error: LedgerError, request: Request | None = None, headers: dict[str, str] | None = None,
               **extra: Any) -> JSONResponse:
    return problem(error.code, error.message, instance=request.url.path if request else None, headers=headers,
                   **extra)


def not_json(request: Request, error: RequestValidationError) -> bool:
    """A body refused because it was not sent as JSON (curl -d sends a form by default)."""
    body_refused = any(tuple(err.get("loc", ()))[:1] == ("body",) for err in error.errors())
    return body_refused and not sent_as_json(request)


def unavailable(error: BaseException) -> LedgerError | None:
    """A failure of the database rather than of the request (down, or this process's connections
    all in use): 503, for the client to try again, never "a bug". Its details stay in the log."""
    if (reason := failures.recognised(error)) is None:
        return None
    log.warning("the database failed a request: %s", reason)
    return LedgerError("unavailable", "the ledger's database did not answer (down, or busy): try again shortly")


def not_valid_json(why: str | None, at: object) -> str:
    """`at` None: the JSON parsed, but is refused as a whole (a key given twice, a huge number)."""
    if at is None:
        return f"the body cannot be taken as JSON: {why}"
    return f"the body is not valid JSON: {why or 'malformed'} at character {at}"


def install(app: FastAPI) -> None:
    """Every error the app can raise leaves as problem+json, never a traceback."""

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, error: LedgerError) -> JSONResponse:
        return problem_of(error, request)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, error: RequestValidationError) -> JSONResponse:
        if (broken := malformed(request)) is not None:
            return problem("invalid_request", not_valid_json(broken.msg, broken.pos if broken.doc else None),
                           instance=request.url.path)
        parts = []
        for err in error.errors():
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                parts.append(not_valid_json((err.get("ctx") or {}).get("error"), loc[-1] if len(loc) > 1 else 0))
                continue
            parts.append(sentence(err))
        detail = "; ".join(parts)[:2000] or "invalid request"
        if not_json(request, error):
            detail = "the body must be JSON, sent with Content-Type: application/json; " + detail
        return problem("invalid_request", detail, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}.get(error.status_code, "invalid_request")
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        return problem(code, detail, status=error.status_code, instance=request.url.path,
                       headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        if (busy := unavailable(error)) is not None:
            return problem_of(busy, request, headers={"Retry-After": "1"})
        log.exception("internal error on %s", request.url.path)
        return problem("internal_error", "the ledger failed to answer: this is a bug, and it is logged",
                       instance=request.url.path)
