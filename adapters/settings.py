"""Persistence settings: one database URL chooses SQLite (the default) or PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

DEFAULT_DB = "sqlite:///subledger.db"
CIPHER_KEY_VAR = "SUBLEDGER_CIPHER_KEY"
"""A base64 AES key (16, 24 or 32 bytes): when set, stored events are encrypted (AES-GCM)."""
CHAINED_RECORDERS = {
    "eventsourcing.sqlite": "adapters.chained_store:ChainedSQLiteRecorder",
    "eventsourcing.postgres": "adapters.chained_postgres:ChainedPostgresRecorder",
}
"""The event recorders that link every stored event into a hash chain (docs/audit.md)."""
SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
AGGREGATE_CACHE = "SUBLEDGER_AGGREGATE_CACHE"
"""How many workspaces each process keeps loaded (default 1000; 0: none). A cached workspace is
brought up to date from the store before every use (the library's fast-forward), so several
processes may write the same database."""
DEFAULT_AGGREGATE_CACHE = 1000
READ_ONLY = "SUBLEDGER_READ_ONLY"
"""Set in the environment of a SQLite file this process may not write (the file, or the folder
its journal would go in): it is opened read-only."""


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("SUBLEDGER_DB") or DEFAULT_DB


def store_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for a URL: sqlite:///path or postgresql://user@host:port/db[?schema=name].
    Anything else it might say (an empty path, parameters it would ignore) is refused, not guessed.

    PostgreSQL: the library's DB-functions path stays off (its function does not take the
    table lock that keeps notification order equal to commit order, so followers never skip
    an event); the chained recorder saves through a function of its own that does
    (adapters/chained_postgres_sql.py). A lock timeout replaces the library's wait-forever default. The pool
    opens one connection and grows to five on demand: many processes starting at once must
    not exhaust the server's connections with idle ones."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        if parsed.query or parsed.fragment:
            raise ValueError(f"{url[:200]!r}: a SQLite URL takes no parameters (sqlite:///path/to/file.db)")
        if path in ("", ":memory:") or parsed.netloc:
            raise ValueError(f"{url[:200]!r} names no file (an empty variable?): a database in memory would end "
                             "with this process and everything it recorded with it; use sqlite:///path/to/file.db")
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
        if Path(path).is_file() and not (os.access(path, os.W_OK) and os.access(Path(path).parent, os.W_OK)):
            env.update(SQLITE_DBNAME=read_only_uri(Path(path)), **{READ_ONLY: "y"})
        elif not Path(path).parent.is_dir():
            raise ValueError(f"SQLite file {path[:200]!r}: the folder {str(Path(path).parent)[:200]!r} does not exist "
                             "(a mistyped path creates nothing)")
        return env
    if parsed.scheme in ("postgresql", "postgres"):
        params = parse_qs(parsed.query, keep_blank_values=True)
        unknown = sorted(set(params) - {"schema"}) + (["schema (twice)"] if len(params.get("schema", [])) > 1 else [])
        if unknown or parsed.fragment:
            raise ValueError(f"a PostgreSQL URL takes one parameter, ?schema=name; this one has "
                             f"{', '.join(repr(u[:40]) for u in unknown) or 'a #fragment'}")
        schema = params.get("schema", ["public"])[0]
        if not SCHEMA.fullmatch(schema) or schema.startswith("pg_"):
            raise ValueError(f"?schema={schema[:70]!r} is not a schema name: 1-63 lower-case letters, digits or '_', "
                             "not starting with a digit or 'pg_'")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///file.db or postgresql://user@host/db")


def eventsourcing_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for `url`: its store (above), the chained recorder, and
    the cipher when $SUBLEDGER_CIPHER_KEY is set."""
    env = store_env(url)
    env["APPLICATION_RECORDER_TOPIC"] = CHAINED_RECORDERS[env["PERSISTENCE_MODULE"]]
    env["SUBLEDGER_SNAPSHOTS_TOPIC"] = "adapters.snapshots:PrunedSnapshots"
    env["MAPPER_TOPIC"] = "domain.topics:LedgerMapper"
    env.update(cache_env(os.environ.get(AGGREGATE_CACHE)))
    env.update(cipher_env(os.environ.get(CIPHER_KEY_VAR)))
    return env


def cache_env(size: str | None) -> dict[str, str]:
    """The library's aggregate cache, not fast-forwarded by the library: reads ask the store for the
    events since, decisions use the cached copy and the version check (domain/loading.py)."""
    try:
        maxsize = DEFAULT_AGGREGATE_CACHE if size in (None, "") else int(size)
    except ValueError:
        raise ValueError(f"${AGGREGATE_CACHE} must be a whole number of workspaces (0: no cache)") from None
    if maxsize <= 0:
        return {}
    return {"AGGREGATE_CACHE_MAXSIZE": str(maxsize), "AGGREGATE_CACHE_FASTFORWARD": "n"}


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


def read_only_uri(path: Path) -> str:
    """A SQLite URI that reads `path` without writing anything. Where no -shm file can be made
    beside it (a read-only folder), the file is read as immutable: nobody can be writing it."""
    folder_writable = os.access(path.parent, os.W_OK) or path.with_name(path.name + "-shm").exists()
    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if folder_writable else "&immutable=1")
