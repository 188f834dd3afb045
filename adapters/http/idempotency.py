"""`Idempotency-Key` on every POST, with Stripe's rules: a key of up to 255 characters; the
same key with the same request replays the stored response (status and body, marked
`Idempotent-Replayed: true`); with another request it is refused 409 `idempotency_conflict`
naming what differs; a request refused as bad input (400), unauthenticated or forbidden, or
that failed inside the server, stores nothing, so it can be retried with the same key; nor does
a payment whose outcome is not known yet (NOT_STORED_CODES).

The table here only replays responses. Exactly-once recording is the domain's: the command
goes to `Ledger.handle` with an idempotency key derived from this one (`handle_once`), so two
concurrent requests with one key record once, whichever stores its response first.

As at Stripe, a key is kept 24 hours (RETENTION, on the injected clock) from the command's
outcome: after that it is forgotten and its reuse is a new request. Each stored response purges
a few rows older than that (`purge_oldest`, on the indexed `created_at`), so the table holds
about a day of keys; the ledger, which keeps a key 30 days, is handed the key's next generation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite

from adapters.http.problems import problem_of
from adapters.side_tables import SideTables, purge_oldest
from adapters.tokens import Principal
from domain.clock import Clock, SystemClock
from domain.errors import LedgerError
from domain.ledger import Ledger, Result
from projections.store import UtcDateTime, dumps

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
RETENTION = timedelta(hours=24)
CLAIMED = 0
"""The status of a key claimed by a request still running (`once`)."""
CLAIM_TIMEOUT = timedelta(minutes=1)
NOT_STORED = frozenset({400, 401, 403, 404, 500, 503})
NOT_STORED_CODES = frozenset({"concurrency_conflict", "idempotency_conflict", "payment_pending", "clock_conflict",
                              "payments_conflict", "payment_action_required"})
"""Transient or caller-side outcomes: the same key may be tried again. A payment still pending
(or awaiting the customer) is asked again: the ledger replays the command under its key with
the outcome recorded since, and never charges twice. A clock conflict may be a test clock another
worker moved meanwhile: the retry follows it. A payments conflict is a process set up with the
wrong gateway: the retry, once it is set up right, is the command's first run."""

KeyHeader = Annotated[str | None, Header(min_length=1, max_length=MAX_KEY,
                                         description="Stripe's rules: a retry with the same key and body "
                                                     "replays the first response.")]
"""The `Idempotency-Key` header of a POST route."""

metadata = MetaData()
responses_table = Table(
    "http_idempotency", metadata,
    Column("scope", String(80), primary_key=True),
    Column("key_hash", String(64), primary_key=True),
    Column("request", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
)


def scope_of(caller: Principal) -> str:
    """Keys are the workspace's for workspace tokens (two admins share them), else the token's."""
    return f"ws:{caller.workspace_id}" if caller.workspace_id else f"tok:{caller.token_id}"


def check_key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= MAX_KEY:
        raise LedgerError("invalid_request", f"{HEADER} must be 1-{MAX_KEY} characters")
    return key


def domain_key(scope: str, key: str, generation: int = 0) -> str:
    """The ledger's idempotency key for an HTTP one (the ledger accepts only its ID pattern);
    `generation` counts the times the key was forgotten and used again."""
    again = f"\n{generation}" if generation else ""
    return "http." + hashlib.sha256(f"{scope}\n{key}{again}".encode()).hexdigest()[:48]


def handle_once(ledger: Ledger, workspace: str, scope: str, key: str, handle: Callable[[str], Result]) -> Result:
    """`handle(ledger key)` under the first generation of the HTTP key that the ledger has not
    recorded, or recorded less than RETENTION ago (then the ledger replays it). Found from the
    recorded events, so concurrent requests with one key agree on it; a new key costs nothing
    more, only a key the ledger knew (then forgot) is handled again under the next generation."""
    for generation in itertools.count():
        candidate = domain_key(scope, key, generation)
        result = handle(candidate)
        if not _forgotten(ledger, workspace, candidate, result):
            return result
    raise AssertionError("unreachable")


def _forgotten(ledger: Ledger, workspace: str, candidate: str, result: Result) -> bool:
    """Whether the ledger answered from a use of `candidate` whose outcome is older than
    RETENTION: a replay, or a conflict with other arguments. Counted from the command's last
    fact, the earliest its answer could be stored: a payment awaiting the customer stores none,
    and its retry after the customer finished, even days later, must replay, never buy again."""
    cutoff = ledger.clock.now() - RETENTION
    if result.replayed:
        return bool(result.events) and result.events[-1].timestamp < cutoff
    if result.error is None or result.error.code != "idempotency_conflict" or result.subscription is None:
        return False
    entry = result.subscription.idempotency.get(candidate)
    last = ledger.workspace_events(workspace, gt=entry["last"] - 1, lte=entry["last"]) if entry else []
    return bool(last) and last[0].timestamp < cutoff


def _stamp(at: datetime) -> str:
    """An instant as text that sorts as it does in time."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two requests, as `path`, `quote` (given in the body or the query: the
    same thing) or `body.x`, values left out."""
    found = [] if before.get("path") == now.get("path") else ["path"]
    for part in ("query", "body"):
        old, new = before.get(part) or {}, now.get(part) or {}
        found += [k if (part, k) == ("query", "quote") else f"{part}.{k}"
                  for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return found


class IdempotencyStore:
    """The `http_idempotency` side table of a ledger's database. A row older than RETENTION on
    `clock` is never replayed, and is purged by later stores."""

    def __init__(self, db_url: str, clock: Clock | None = None) -> None:
        self.tables = SideTables(db_url, metadata)
        self.clock = clock or SystemClock()

    def find(self, scope: str, key: str) -> dict[str, Any] | None:
        t = responses_table
        query = select(t).where(t.c.scope == scope, t.c.key_hash == _key_hash(key),
                                t.c.created_at >= self.clock.now() - RETENTION)
        return self.tables.run(lambda conn: (lambda r: dict(r) if r else None)(conn.execute(query).mappings().first()))

    def store(self, scope: str, key: str, request: dict[str, Any], response: JSONResponse) -> None:
        """Store the response, unless the key's is stored already and not older than RETENTION
        (an older one is replaced; so is this request's own claim), after purging a few rows
        older than RETENTION."""
        t = responses_table
        self._upsert(dict(scope=scope, key_hash=_key_hash(key), request=dumps(request), status=response.status_code,
                          media_type=response.media_type or "application/json", body=bytes(response.body).decode()),
                     t.c.status == CLAIMED)

    def claim(self, scope: str, key: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """Take the key for a request about to run (None), or the row that holds it: a stored
        response, or another request's claim. A claim older than CLAIM_TIMEOUT (its process died)
        is taken over. Claims age on the wall clock, kept as the claim's body: whether a process
        is still running has nothing to do with the ledger's clock (a pinned test clock never
        moves)."""
        t = responses_table
        wall = SystemClock().now()
        row = dict(scope=scope, key_hash=_key_hash(key), request=dumps(request), status=CLAIMED,
                   media_type="application/json", body=_stamp(wall))
        if self._upsert(row, (t.c.status == CLAIMED) & (t.c.body < _stamp(wall - CLAIM_TIMEOUT))):
            return None
        return self.find(scope, key) or {"status": CLAIMED}

    def release(self, scope: str, key: str) -> None:
        """Let the key go after a request whose outcome a retry should redo (NOT_STORED)."""
        t = responses_table
        self.tables.run(lambda conn: conn.execute(t.delete().where(
            t.c.scope == scope, t.c.key_hash == _key_hash(key), t.c.status == CLAIMED)))

    def _upsert(self, row: dict[str, Any], or_where: Any) -> bool:
        """Insert `row`, or replace the key's row if it is older than RETENTION or `or_where`;
        whether it was written."""
        now = self.clock.now()
        t = responses_table
        row = {**row, "created_at": now}

        def purge_and_insert(conn: Any) -> bool:
            purge_oldest(conn, t, t.c.created_at, now - RETENTION)
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            done = conn.execute(dialect.insert(t).values(**row).on_conflict_do_update(
                index_elements=[t.c.scope, t.c.key_hash], set_=row,
                where=(t.c.created_at < now - RETENTION) | or_where))
            return bool(done.rowcount)

        return bool(self.tables.run(purge_and_insert))

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
    if found is None or found["status"] == CLAIMED:
        return None
    return _replayed(found, described)


def once(request: Request, caller: Principal, key: str | None, described: dict[str, Any],
         run: Callable[[], JSONResponse], withheld: str | None = None) -> JSONResponse:
    """A POST that records nothing in the ledger (a token, a webhook endpoint) run at most once per
    key: the key is claimed before it runs, so a concurrent request with the same key is refused
    409 `concurrency_conflict` rather than run twice. `withheld`: a secret in the response, shown
    only in the first one; a replay returns it as null (no secret is stored here)."""
    if key is None:
        return _run(request, run)
    store, scope = store_of(request), scope_of(caller)
    found = store.claim(scope, key, described)
    if found is not None:
        if found["status"] == CLAIMED:
            raise LedgerError("concurrency_conflict", f"a request with this {HEADER} is still being handled: "
                              "retry in a moment")
        return _replayed(found, described)
    try:
        response = _run(request, run)
    except BaseException:
        store.release(scope, key)
        raise
    if not _stored(response):
        store.release(scope, key)
        return response
    kept = response
    if withheld is not None and response.status_code < 400:
        body = json.loads(bytes(response.body))
        kept = JSONResponse({**body, withheld: None}, status_code=response.status_code)
    store.store(scope, key, described, kept)
    return response


def _run(request: Request, run: Callable[[], JSONResponse]) -> JSONResponse:
    try:
        return run()
    except LedgerError as e:
        return problem_of(e, request)


def _replayed(found: dict[str, Any], described: dict[str, Any]) -> JSONResponse:
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
    if key is not None and _stored(response):
        store_of(request).store(scope_of(caller), key, described, response)
    return response


def _stored(response: JSONResponse) -> bool:
    """Whether a response is the key's for good, or one a retry should redo (NOT_STORED)."""
    if response.status_code in NOT_STORED:
        return False
    code = json.loads(bytes(response.body)).get("code") if response.status_code >= 400 else None
    return code not in NOT_STORED_CODES
