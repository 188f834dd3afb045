"""Fixtures: every ledger test runs on SQLite and on PostgreSQL.

PostgreSQL tests skip when the server is unreachable, except under CI=true,
where they fail: CI must prove the PostgreSQL path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest

from adapters.app import build_ledger
from adapters.payments import TestPaymentGateway
from domain.commands import Actor, parse_command
from domain.clock import run_until
from domain.ledger import Ledger, Result, TestClock

PG = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = Actor(id="alice", role="admin")
MEMBER = Actor(id="bob", role="member")
SALES = Actor(id="sam", role="sales")
"""Who sets and lifts a custom contract (R9)."""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


_reached: list[bool] = []


def postgres_available() -> bool:
    """Asked before every PostgreSQL test: once the server has answered, the answer is kept for
    the session (a server lost later fails the test that needs it anyway), which saves a
    connection (3 ms or more) per PostgreSQL test, 1-2 s over the suite."""
    if _reached:
        return True
    try:
        with psycopg.connect(PG, connect_timeout=3):
            _reached.append(True)
            return True
    except psycopg.OperationalError:
        return False


def fresh_postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL on a schema of its own, dropped afterwards."""
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is unreachable, and CI=true requires it")
        pytest.skip("PostgreSQL unreachable")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG}?schema={schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        yield from fresh_postgres_schema()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """PostgreSQL only: for what exists only there (LISTEN/NOTIFY followers)."""
    yield from fresh_postgres_schema()


class Book:
    """A ledger on a test clock, driven the way the rules read: at a time, someone does something."""

    def __init__(self, db_url: str, catalog: str, start: str) -> None:
        self.clock = TestClock(utc(start))
        self.payments = TestPaymentGateway(db_url)
        self.ledger: Ledger = build_ledger(db_url, catalog=catalog, clock=self.clock, payments=self.payments)

    def at(self, when: str) -> Book:
        run_until(self.ledger, utc(when), self.clock.move_to)
        return self

    def scheduler_down_until(self, when: str) -> Book:
        """The clock jumps to `when` with no scheduler run on the way, then one run: what a
        production scheduler that was not running finds (where `at` stops on every due instant)."""
        self.clock.move_to(utc(when))
        self.ledger.advance()
        return self

    def do(self, workspace: str, command: str, actor: Actor = ADMIN, key: str | None = None, **args: Any) -> Result:
        return self.ledger.handle(workspace, parse_command(command, args), actor, idempotency_key=key)

    def preview(self, workspace: str, command: str, actor: Actor = ADMIN, **args: Any) -> Result:
        return self.ledger.preview(workspace, parse_command(command, args), actor)

    def sub(self, workspace: str) -> Any:
        return self.ledger.get(workspace)

    def close(self) -> None:
        self.ledger.close()
        self.payments.close()


@pytest.fixture
def book(db_url: str) -> Iterator[Any]:
    """book(catalog, start) -> Book; closed after the test."""
    made: list[Book] = []

    def make(catalog: str = "forms", start: str = "2026-04-01T00:00:00") -> Book:
        b = Book(db_url, catalog, start)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
