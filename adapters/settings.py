"""Persistence settings: one database URL chooses SQLite (the default) or PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

DEFAULT_DB = "sqlite:///subledger.db"
CIPHER_KEY_VAR = "SUBLEDGER_CIPHER_KEY"
"""A base64 AES key (16, 24 or 32 bytes): when set, stored events are encrypted (AES-GCM)."""
CHAINED_RECORDERS = {
    "eventsourcing.sqlite": "adapters.chained_store:ChainedSQLiteRecorder",
    "eventsourcing.postgres": "adapters.chained_store:ChainedPostgresRecorder",
}
"""The event recorders that link every stored event into a hash chain (docs/audit.md)."""


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("SUBLEDGER_DB") or DEFAULT_DB


def store_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for a URL: sqlite:///path, sqlite:///:memory: or
    postgresql://user@host:port/db[?schema=name].

    PostgreSQL keeps the library's default insert path: its table lock keeps notification
    order equal to commit order, so followers never skip an event (the DB-functions path
    does not take it). A lock timeout replaces the library's wait-forever default."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path) or ":memory:"
        if path == ":memory:":
            path = "file:subledger?mode=memory&cache=shared"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
    if parsed.scheme in ("postgresql", "postgres"):
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_SCHEMA": parse_qs(parsed.query).get("schema", ["public"])[0],
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///file.db or postgresql://user@host/db")


def eventsourcing_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for `url`: its store (above), the chained recorder, and
    the cipher when $SUBLEDGER_CIPHER_KEY is set."""
    env = store_env(url)
    env["APPLICATION_RECORDER_TOPIC"] = CHAINED_RECORDERS[env["PERSISTENCE_MODULE"]]
    env.update(cipher_env(os.environ.get(CIPHER_KEY_VAR)))
    return env


def cipher_env(key: str | None) -> dict[str, str]:
    """AES-GCM (the `cryptography` package) over every stored event and snapshot. The key is
    also set under the application's own prefix, which the library reads first."""
    if not key:
        return {}
    try:
        size = len(base64.b64decode(key, validate=True))
    except (binascii.Error, ValueError):
        size = 0
    if size not in (16, 24, 32):
        raise ValueError(f"${CIPHER_KEY_VAR} must be a base64 AES key of 16, 24 or 32 bytes "
                         "(`subledger new-cipher-key` makes one)")
    return {"CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher", "CIPHER_KEY": key, CIPHER_KEY_VAR: key}
