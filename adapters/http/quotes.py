"""Quotes kept beside the events (the `http_quotes` side table): what a preview promised, until
it expires (default 30 minutes of ledger time, $SUBLEDGER_QUOTE_TTL seconds).

A quote names the workspace, the command and its arguments' hash, the instant it was priced
at, the catalog's content hash, the workspace's version and the invoice terms; committing
with it hands `Ledger.handle` a domain Pin, which refuses `quote_stale` inside the same
decide/save loop that records, so the check cannot race a writer.

Expired quotes are purged by the creation of later ones (`purge_oldest`, on the indexed
`expires_at`), a day after they expire (FORGET_AFTER): until then committing with one answers
`quote_stale` ("preview again") rather than not_found.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, Text, select, text

from adapters.side_tables import SideTables, purge_oldest
from domain.commands import Command
from domain.errors import LedgerError
from domain.plain_errors import described
from domain.quotes import Pin
from projections.store import UtcDateTime, dumps, iso

DEFAULT_TTL = timedelta(minutes=30)
FORGET_AFTER = timedelta(hours=24)
PATTERN = described(r"^qt_[a-f0-9]{24}$", "a quote id from a preview: qt_ and 24 hex digits")

metadata = MetaData()
quotes_table = Table(
    "http_quotes", metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("command", String(40), nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("quoted_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    Column("catalog_hash", String(100), nullable=False),
    Column("workspace_version", Integer, nullable=False),
    Column("terms", Text, nullable=False),
)


def configured_ttl() -> timedelta:
    text = os.environ.get("SUBLEDGER_QUOTE_TTL")
    if not text:
        return DEFAULT_TTL
    if not text.isdigit() or not 1 <= int(text) <= 86_400 * 30:
        raise LedgerError("invalid_request", "SUBLEDGER_QUOTE_TTL: whole seconds, 1 to 2592000")
    return timedelta(seconds=int(text))


class QuoteStore:
    def __init__(self, db_url: str, ttl: timedelta | None = None) -> None:
        self.tables = SideTables(db_url, metadata)
        self.ttl = ttl or configured_ttl()

    def create(self, workspace_id: str, command: Command, at: datetime, catalog_hash: str, version: int,
               terms: list[dict[str, Any]]) -> dict[str, Any]:
        """A new quote, after purging a few quotes expired more than FORGET_AFTER before `at`;
        returns what the preview response shows of it."""
        row = dict(id="qt_" + secrets.token_hex(12), workspace_id=workspace_id, command=command.name,
                   args_hash=command.args_hash(), quoted_at=at, expires_at=at + self.ttl, catalog_hash=catalog_hash,
                   workspace_version=version, terms=dumps(terms))
        def insert(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":  # a quote lost in a crash is only a 404 later: skip the fsync wait
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            purge_oldest(conn, quotes_table, quotes_table.c.expires_at, at - FORGET_AFTER)
            conn.execute(quotes_table.insert().values(**row))

        self.tables.run(insert)
        return {"id": row["id"], "quoted_at": iso(at), "expires_at": iso(row["expires_at"]),
                "catalog_hash": catalog_hash, "workspace_version": version}

    def pin(self, quote_id: str, workspace_id: str, command: Command, now: datetime) -> Pin:
        """The pin a command commits under: an unknown quote (or another workspace's) is
        not_found, one for another command or arguments is invalid_request, an expired one
        quote_stale."""
        query = select(quotes_table).where(quotes_table.c.id == quote_id)
        row = self.tables.run(lambda conn: conn.execute(query).mappings().first())
        if row is None or row["workspace_id"] != workspace_id:
            raise LedgerError("not_found", f"no quote {quote_id[:40]!r} for workspace {workspace_id}")
        if row["command"] != command.name or row["args_hash"] != command.args_hash():
            raise LedgerError("invalid_request", f"quote {quote_id} was made for another request ({row['command']} "
                              "with other arguments): commit the quoted command, or preview this one")
        if now >= row["expires_at"]:
            raise LedgerError("quote_stale", f"quote {quote_id} expired at {iso(row['expires_at'])}: preview again")
        return Pin(row["workspace_version"], row["catalog_hash"], json.loads(row["terms"]))

    def close(self) -> None:
        self.tables.close()
