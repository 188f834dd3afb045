"""API tokens: bearer secrets for the HTTP API and the console, stored only as hashes.

A token is printed once when it is made (`subledger tokens create`); the ledger keeps its
SHA-256, which is enough for a 256-bit random secret (no password stretching is needed: there
is nothing to guess). Roles:

- `admin`, `billing_admin`: change and read their own workspace (R1, R2);
- `member`: reads its own workspace;
- `support`: reads every workspace and may run explain, as-of and what-if; changes nothing;
- `service`: a downstream service; reads every workspace;
- `operator`: manages tokens and webhooks; reads and changes no workspace;
- `sales`: sets and lifts any workspace's contract (R9); reads and changes nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, select, update

from adapters.side_tables import SideTables
from domain.commands import check_new_workspace_id
from domain.errors import LedgerError
from domain.text import unprintable
from projections.store import UtcDateTime

ROLES = ("admin", "billing_admin", "member", "support", "service", "operator", "sales")
WORKSPACE_ROLES = frozenset({"admin", "billing_admin", "member"})
"""Roles bound to one workspace; the others span the ledger."""
READ_ALL_ROLES = frozenset({"support", "service"})
PREFIX = "sl_"

metadata = MetaData()
tokens_table = Table(
    "api_tokens", metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("workspace_id", String(64)),
    Column("label", String(200)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's id, role and (for workspace roles) workspace."""

    token_id: str
    role: str
    workspace_id: str | None = None

    def reads(self, workspace_id: str) -> bool:
        return self.role in READ_ALL_ROLES or (self.role in WORKSPACE_ROLES and self.workspace_id == workspace_id)

    def changes(self, workspace_id: str) -> bool:
        return self.role in ("admin", "billing_admin") and self.workspace_id == workspace_id


def secret_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The `api_tokens` table of a ledger's database."""

    def __init__(self, db_url: str) -> None:
        self.tables = SideTables(db_url, metadata)

    def create(self, role: str, workspace_id: str | None = None, label: str | None = None) -> tuple[Principal, str]:
        """A new token: its principal and the secret, which is never stored nor shown again."""
        if role not in ROLES:
            raise LedgerError("invalid_request", f"unknown role {role[:40]!r}: use one of {', '.join(ROLES)}")
        if role in WORKSPACE_ROLES and workspace_id is None:
            raise LedgerError("invalid_request", f"a token with role {role} belongs to one workspace: "
                              "name it (`--workspace`, or `workspace` in the request's body)")
        if role not in WORKSPACE_ROLES and workspace_id is not None:
            raise LedgerError("invalid_request", f"a token with role {role} is not bound to a workspace: "
                              "name none (no `--workspace`, no `workspace` in the request's body)")
        if workspace_id is not None:
            check_new_workspace_id(workspace_id)  # a reserved id names no workspace the API serves
        if label is not None and (len(label) > 200 or unprintable(label)):
            raise LedgerError("invalid_request", "a token label is one line of printable text, at most 200 characters")
        token = PREFIX + secrets.token_urlsafe(32)
        principal = Principal("tok_" + secrets.token_hex(8), role, workspace_id)
        row = dict(id=principal.token_id, secret_hash=secret_hash(token), role=role, workspace_id=workspace_id,
                   label=label, created_at=datetime.now(timezone.utc), revoked_at=None)
        self.tables.run(lambda conn: conn.execute(tokens_table.insert().values(**row)))
        return principal, token

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a live token, or None (unknown, malformed or revoked)."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        query = select(tokens_table).where(tokens_table.c.secret_hash == secret_hash(token),
                                           tokens_table.c.revoked_at.is_(None))
        row = self.tables.run(lambda conn: conn.execute(query).mappings().one_or_none())
        return Principal(row["id"], row["role"], row["workspace_id"]) if row else None

    def revoke(self, token_id: str) -> None:
        statement = (update(tokens_table).where(tokens_table.c.id == token_id, tokens_table.c.revoked_at.is_(None))
                     .values(revoked_at=datetime.now(timezone.utc)))
        if self.tables.run(lambda conn: conn.execute(statement).rowcount) != 1:
            raise LedgerError("not_found", f"no live token {token_id[:40]!r}")

    def list(self) -> list[dict[str, Any]]:
        query = select(tokens_table.c.id, tokens_table.c.role, tokens_table.c.workspace_id, tokens_table.c.label,
                       tokens_table.c.created_at, tokens_table.c.revoked_at).order_by(tokens_table.c.created_at)
        return self.tables.run(lambda conn: [dict(r) for r in conn.execute(query).mappings()])

    def close(self) -> None:
        self.tables.close()
