"""Wiring: a Ledger from a database URL, the built-in catalogs and a clock."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql

from adapters.chained_store import CREATE_LOCK
from adapters.payments import TestPaymentGateway
from adapters.settings import database_url, eventsourcing_env
from domain.catalog import builtin_catalogs, load_catalog
from domain.errors import LedgerError
from domain.ledger import Clock, Ledger, SystemClock
from domain.payments import PaymentGateway
from projections.runner import Projections


def ensure_schema(env: dict[str, str]) -> None:
    """PostgreSQL tables live in POSTGRES_SCHEMA; the library creates tables, not schemas."""
    if env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres" or env["POSTGRES_SCHEMA"] == "public":
        return
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True,
    ) as conn:
        with conn.transaction():  # in turn: two processes creating one schema collide on pg_namespace
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"])))


def payment_gateway(db_url: str) -> PaymentGateway:
    """The gateway `SUBLEDGER_PAYMENTS` names: `test` (the default: Stripe's test tokens, charges
    kept in the ledger's database) or `stripe`."""
    kind = os.environ.get("SUBLEDGER_PAYMENTS", "test")
    if kind == "test":
        return TestPaymentGateway(db_url)
    raise LedgerError("invalid_request", f"SUBLEDGER_PAYMENTS={kind!r} is not available: use 'test'")


def build_ledger(db: str | None = None, *, catalog: str | Path = "forms", clock: Clock | None = None,
                 payments: PaymentGateway | None = None) -> Ledger:
    """A Ledger on `db` (default: $SUBLEDGER_DB or ./subledger.db). `catalog` is the catalog new
    workspaces are registered on: a built-in name or a TOML path."""
    catalogs = builtin_catalogs()
    default = load_catalog(catalog)
    catalogs[default.id] = default
    url = database_url(db)
    env = eventsourcing_env(url)
    ensure_schema(env)
    return Ledger(env, catalogs=catalogs, default_catalog=default.id, clock=clock or SystemClock(),
                  payments=payments or payment_gateway(url))


def read_models(ledger: Ledger) -> Projections:
    """The ledger's read models, in its own database (use as a context manager)."""
    return Projections(dict(ledger.env), source=ledger)


def catch_up(ledger: Ledger) -> None:
    """Inline mode: bring every read model up to the ledger's last event."""
    with read_models(ledger) as projections:
        projections.catch_up()
