"""Infrastructure failures in plain English: what went wrong with the database, not a driver dump.

The drivers say it in many shapes (psycopg at connect time gives no SQLSTATE, only libpq's
text; the library and SQLAlchemy wrap the driver's error), so `explain` walks the chain of
causes to the driver's error and matches it once, here. Everything it recognises becomes
`unavailable` (exit 3); what it does not is a bug, reported as `internal_error`.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator, Mapping

from domain.errors import LedgerError

SQLSTATE = {
    "28P01": "authentication failed",
    "28000": "authentication failed",
    "3D000": "unknown database",
    "3F000": "the schema does not exist",
    "42501": "permission denied",
    "53100": "the database server's disk is full",
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
    "55P03": "the database is busy: a lock was not granted in time; try again",
    "57014": "a statement took too long and was cancelled; try again",
    "57P01": "the database server is shutting down",
    "57P03": "the database server is starting up; try again",
    "25006": "the database is read-only (a standby server?)",
    "40001": "the database cancelled a transaction that conflicted with another; try again",
    "40P01": "the database broke a deadlock with another transaction; try again",
}
"""PostgreSQL error classes that are about the database, not the request."""

PG_TEXT = [
    (r"Connection refused", "connection refused: is PostgreSQL running there and listening on that port?"),
    (r"password authentication failed|role \"[^\"]*\" does not exist|no password supplied|pg_hba\.conf",
     "authentication failed"),
    (r"database \"[^\"]*\" does not exist", "unknown database"),
    (r"failed to resolve host|could not translate host name", "the host name is unknown"),
    (r"timeout expired|connection timed out", "no answer within the connect timeout"),
    (r"too many clients", "the database server has too many connections"),
    (r"the database system is (starting up|shutting down|in recovery mode)",
     "the database server is starting up or shutting down; try again"),
    (r"server closed the connection|terminating connection|connection .* lost|SSL SYSCALL",
     "the connection to the database was lost; try again"),
]

SQLITE_TEXT = [
    (r"readonly database|read-only", "the database file is read-only"),
    (r"database is locked|database table is locked",
     "the database file is busy (another process holds its lock); try again"),
    (r"unable to open database file", "the database file cannot be opened (missing folder or no permission?)"),
    (r"file is not a database|file is encrypted", "the file is not a SQLite database"),
    (r"disk is full|database or disk is full", "the disk is full"),
    (r"disk I/O error", "a disk I/O error occurred"),
    (r"malformed", "the database file is damaged"),
]


MISSING_CHAIN = re.compile(r'(?:no such table: |relation ")([\w."]*_chain(?:_meta)?)\b"?(?: does not exist)?')
"""SQLite's and PostgreSQL's words for a table of the event chain that is not there."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it, outermost first (SQLAlchemy keeps the driver's in .orig)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


def where(env: Mapping[str, str] | None) -> str:
    """The database an error is about, as an operator would name it."""
    if not env:
        return "the database"
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        schema = env.get("POSTGRES_SCHEMA", "public")
        return (f"PostgreSQL database {env['POSTGRES_DBNAME']!r} at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']} "
                f"as user {env['POSTGRES_USER']!r}" + ("" if schema == "public" else f", schema {schema!r}"))
    name = env.get("SQLITE_DBNAME", "")
    return f"SQLite file {re.sub(r'^file:|[?].*$', '', name)!r}"


class _NotLoaded(Exception):
    """Stands for an error class whose module this process never imported: nothing is one."""


def _loaded(module: str, name: str) -> type[BaseException]:
    """An error class, without importing its driver: an error of a driver never imported cannot
    have been raised (the CLI imports psycopg, SQLAlchemy and eventsourcing only when it needs them)."""
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else _NotLoaded


def explain(error: BaseException, env: Mapping[str, str] | None = None) -> LedgerError | None:
    """`unavailable` with a sentence naming the database and the problem, or None when the
    error is not about the infrastructure at all."""
    for cause in causes(error):
        found = _reason(cause)
        if found:
            detail = _first_line(cause)
            redundant = not detail or detail.lower() in found.lower()
            return LedgerError("unavailable", f"{where(env)}: {found}" + ("" if redundant else f" ({detail})"))
    chain = next((m for c in causes(error) if (m := MISSING_CHAIN.search(str(c)))), None)
    if chain:
        return LedgerError("event_chain_broken", f"{where(env)}: its event chain table {chain.group(1)} is missing, "
                           "dropped by hand: an edit of the events made since cannot be told. Restore the chain "
                           "tables from a backup (docs/audit.md)")
    undecodable = [c for c in causes(error) if isinstance(c, _loaded("eventsourcing.persistence",
                                                                       "MapperDeserialisationError"))]
    if undecodable:
        return LedgerError("unavailable", f"{where(env)}: {unreadable(env)} ({_first_line(undecodable[0])[:240]})")
    if isinstance(error, (_loaded("eventsourcing.persistence", "PersistenceError"),
                          _loaded("sqlalchemy.exc", "SQLAlchemyError"), _loaded("psycopg", "Error"), sqlite3.Error)):
        return LedgerError("unavailable", f"{where(env)}: database error: {_first_line(error) or type(error).__name__}")
    if isinstance(error, OSError) and error.errno is not None:
        named = f": {error.filename}" if error.filename else ""
        return LedgerError("unavailable", f"{where(env)}: {error.strerror}{named}")
    return None


def recognised(error: BaseException) -> str | None:
    """What the database's trouble is, when one of its causes is a failure this module knows by
    name (down, busy, out of connections, a pool used up): a reason to try again, unlike the
    other database errors `explain` also reports (a missing table, a bad statement)."""
    return next((found for cause in causes(error) if (found := _reason(cause))), None)


def unreadable(env: Mapping[str, str] | None) -> str:
    """A stored event that does not decode: the cipher key, or damaged rows (docs/audit.md)."""
    keyed = "with this key" if env and env.get("CIPHER_TOPIC") else "without a key"
    return (f"stored events cannot be read {keyed}: set $SUBLEDGER_CIPHER_KEY to the key this ledger was "
            "written with, if it is encrypted; else its rows were damaged (`subledger audit verify` tells)")


def _reason(error: BaseException) -> str | None:
    if isinstance(error, _loaded("psycopg_pool", "PoolTimeout")):
        return "no connection could be made within the connect timeout"
    if isinstance(error, _loaded("sqlalchemy.exc", "TimeoutError")):
        return "every connection of this process's pool stayed in use; try again"
    if isinstance(error, _loaded("psycopg", "Error")):
        if error.sqlstate in SQLSTATE:
            return SQLSTATE[error.sqlstate]
        return _match(PG_TEXT, str(error))
    if isinstance(error, sqlite3.Error):
        return _match(SQLITE_TEXT, str(error))
    if isinstance(error, (_loaded("eventsourcing.persistence", "PersistenceError"),
                          _loaded("sqlalchemy.exc", "DBAPIError"))):
        return _match(PG_TEXT + SQLITE_TEXT, str(error))
    return None


def _match(table: list[tuple[str, str]], text: str) -> str | None:
    return next((reason for pattern, reason in table if re.search(pattern, text)), None)


def _first_line(error: BaseException) -> str:
    """The driver's own words, shortened: the server's FATAL line rather than libpq's preamble."""
    text = str(error).strip()
    fatal = re.search(r"FATAL:\s+(.*)", text)
    line = (fatal.group(1) if fatal else text.splitlines()[0] if text else "").strip()
    line = re.sub(r"^connection failed: connection to server at .*? failed: |^\([\w.]+\) ", "", line)
    return line[:200]
