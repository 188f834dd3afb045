"""`Idempotency-Key` on every POST, with Stripe's rules: a key of up to 255 characters; the
same key with the same request replays the stored response (status and body, marked
`Idempotent-Replayed: true`); with another request it is refused 409 `idempotency_conflict`
naming what differs; a request refused as bad input (400), unauthenticated or forbidden, or
that failed inside the server, stores nothing, so it can be retried with the same key.

The table here only replays responses. Exactly-once recording is the domain's: the command
goes to `Ledger.handle` with an idempotency key derived from this one (`domain_key`), so two
concurrent requests with one key record once, whichever stores its response first.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select

from adapters.side_tables import SideTables, insert_if_absent
from adapters.tokens import Principal
from domain.errors import LedgerError
from projections.store import UtcDateTime, dumps

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
NOT_STORED = frozenset({400, 401, 403, 404, 500, 503})
NOT_STORED_CODES = frozenset({"concurrency_conflict", "idempotency_conflict"})
"""Transient or caller-side outcomes: the same key may be tried again."""

metadata = MetaData()
responses_table = Table(
    "http_idempotency", metadata,
    Column("scope", String(80), primary_key=True),
    Column("key_hash", String(64), primary_key=True),
    Column("request", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


def scope_of(caller: Principal) -> str:
    """Keys are the workspace's for workspace tokens (two admins share them), else the token's."""
    return f"ws:{caller.workspace_id}" if caller.workspace_id else f"tok:{caller.token_id}"


def check_key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= MAX_KEY:
        raise LedgerError("invalid_request", f"{HEADER} must be 1-{MAX_KEY} characters")
    return key


def domain_key(scope: str, key: str) -> str:
    """The ledger's idempotency key for an HTTP one: the ledger accepts only its ID pattern."""
    return "http." + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:48]


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two requests, as `path`, `query.x` or `body.x` (values left out)."""
    found = [] if before.get("path") == now.get("path") else ["path"]
    for part in ("query", "body"):
        old, new = before.get(part) or {}, now.get(part) or {}
        found += [f"{part}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return found


class IdempotencyStore:
    """The `http_idempotency` side table of a ledger's database."""

    def __init__(self, db_url: str) -> None:
        self.tables = SideTables(db_url, metadata)

    def find(self, scope: str, key: str) -> dict[str, Any] | None:
        query = select(responses_table).where(responses_table.c.scope == scope,
                                              responses_table.c.key_hash == _key_hash(key))
        return self.tables.run(lambda conn: (lambda r: dict(r) if r else None)(conn.execute(query).mappings().first()))

    def store(self, scope: str, key: str, request: dict[str, Any], response: JSONResponse) -> None:
        row = dict(scope=scope, key_hash=_key_hash(key), request=dumps(request), status=response.status_code,
                   media_type=response.media_type or "application/json", body=bytes(response.body).decode(),
                   created_at=datetime.now(timezone.utc))
        self.tables.run(lambda conn: conn.execute(insert_if_absent(conn, responses_table, row)))

    def close(self) -> None:
        self.tables.close()


def store_of(request: Request) -> IdempotencyStore:
    return request.app.state.idempotency


def replay_or_conflict(request: Request, caller: Principal, key: str | None,
                       described: dict[str, Any]) -> JSONResponse | None:
    """The stored response for this key (same request), a 409 (another request), or None (new key)."""
    if key is None:
        return None
    found = store_of(request).find(scope_of(caller), key)
    if found is None:
        return None
    before = json.loads(found["request"])
    if before != json.loads(dumps(described)):
        named = ", ".join(differences(before, json.loads(dumps(described)))) or "the request"
        raise LedgerError("idempotency_conflict", f"{HEADER} was first used with another request: {named} "
                          "differs; use a new key for a new request")
    return JSONResponse(json.loads(found["body"]), status_code=found["status"], media_type=found["media_type"],
                        headers={REPLAYED: "true"})


def remember(request: Request, caller: Principal, key: str | None, described: dict[str, Any],
             response: JSONResponse) -> JSONResponse:
    """Store the response for the key unless it is one a retry should redo (NOT_STORED)."""
    if key is None or response.status_code in NOT_STORED:
        return response
    code = json.loads(bytes(response.body)).get("code") if response.status_code >= 400 else None
    if code not in NOT_STORED_CODES:
        store_of(request).store(scope_of(caller), key, described, response)
    return response
