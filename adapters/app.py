"""Wiring: a Ledger from a database URL, the built-in catalogs and a clock."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from adapters.payments import TestPaymentGateway
from adapters.schema import prepare
from adapters.settings import READ_ONLY, database_url, eventsourcing_env
from domain.catalog import NewerRules, builtin_catalogs, load_catalog
from domain.errors import LedgerError
from domain.ledger import Clock, Ledger, SystemClock
from domain.payments import PaymentGateway
from projections.runner import Projections


def ledger_env(db: str | None = None) -> dict[str, str]:
    """The eventsourcing environment of `db` (default: $SUBLEDGER_DB or ./subledger.db), its
    tables set up once per database version (adapters/schema.py)."""
    return prepare(eventsourcing_env(database_url(db)))


def payment_gateway(db_url: str) -> PaymentGateway:
    """The gateway `SUBLEDGER_PAYMENTS` names: `test` (the default: Stripe's test tokens, charges
    kept in the ledger's database) or `stripe`."""
    kind = os.environ.get("SUBLEDGER_PAYMENTS", "test")
    if kind == "test":
        return TestPaymentGateway(db_url)
    if kind == "stripe":
        from adapters.stripe_gateway import StripeGateway
        return StripeGateway.from_env(db_url)
    raise LedgerError("invalid_request", f"SUBLEDGER_PAYMENTS={kind!r} is not available: use 'test' or 'stripe'")


def build_ledger(db: str | None = None, *, catalog: str | Path = "forms", clock: Clock | None = None,
                 payments: PaymentGateway | None = None) -> Ledger:
    """A Ledger on `db` (default: $SUBLEDGER_DB or ./subledger.db). `catalog` is the catalog new
    workspaces are registered on: a built-in name or a TOML path."""
    catalogs = builtin_catalogs()
    newer: NewerRules | None = None
    try:
        default = load_catalog(catalog)
    except NewerRules as e:  # refused, unless this ledger recorded this very content (a release ago)
        default, newer = e.catalog, e
    catalogs[default.id] = default
    url = database_url(db)
    ledger = Ledger(ledger_env(url), catalogs=catalogs, default_catalog=default.id, clock=clock or SystemClock(),
                    payments=payments or payment_gateway(url))
    if newer is not None and not ledger.recorded_as_is(default):
        ledger.close()
        raise newer
    return ledger


def read_models(ledger: Ledger) -> Projections:
    """The ledger's read models, in its own database (use as a context manager); their tables
    are set up on first use."""
    return Projections(prepare(ledger.env, read_models=True), source=ledger)


def catch_up(ledger: Ledger) -> None:
    """Inline mode: bring every read model up to the ledger's last event."""
    with read_models(ledger) as projections:
        projections.catch_up()


@contextmanager
def read_models_of(db: str | None) -> Iterator[Projections]:
    """The read models of `db` for a read: caught up first (or as they stand, read-only)."""
    try:
        env = eventsourcing_env(database_url(db))
    except ValueError as e:
        raise LedgerError("invalid_request", f"--db: {e}") from None
    with Projections(prepare(env, read_models=True)) as projections:
        refresh(projections)
        yield projections


def refresh(projections: Projections) -> None:
    """Before a read: catch the read models up, except on a read-only file, read as it stands."""
    if not is_read_only(projections.env):
        projections.catch_up()


def is_read_only(env: Mapping[str, str]) -> bool:
    return bool(env.get(READ_ONLY))
