"""Shared by the HTTP tests: the demo ledger (seed 003 and the other seeds' stories, run
through Ledger.handle on a test clock), an app on it, and tokens of every role."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from adapters.demo import demo_file
from adapters.http.app import create_app
from adapters.instants import parse_instant
from adapters.scenario import run_scenario
from domain.ledger import TestClock

NOW = "2026-07-01T00:00:00Z"
ROLES = ("admin", "billing_admin", "member", "support", "service", "operator", "sales")
OWN, OTHER = "acme", "beta"


def demo_db(factory: Any) -> str:
    """A SQLite file holding the demo story, made once per test session (`factory`: pytest's
    tmp_path_factory); tests that write work on a copy_db of it."""
    path = factory.getbasetemp() / "http_demo.db"
    if not path.exists():
        outputs, code = run_scenario(demo_file(), f"sqlite:///{path}")
        assert code == 0, [o["expect_failures"] for o in outputs if o["expect_failures"]]
    return f"sqlite:///{path}"


def copy_db(url: str, folder: Path) -> str:
    """A copy of a SQLite ledger (through SQLite's backup, so a write-ahead log is included)."""
    target = folder / "copy.db"
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as source, \
            closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


def client(url: str) -> Iterator[TestClient]:
    app = create_app(url, clock=TestClock(parse_instant(NOW)))
    with TestClient(app) as c:
        yield c


def tokens(c: TestClient) -> dict[str, str]:
    """role -> secret; the workspace roles belong to OWN."""
    store = c.app.state.tokens  # type: ignore[attr-defined]
    return {role: store.create(role, OWN if role in ("admin", "billing_admin", "member") else None)[1]
            for role in ROLES}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def walk(c: TestClient, path: str, headers: dict[str, str], key: str, limit: int = 2, **params: Any) -> list[Any]:
    """Every object of a paginated list, page by page through the cursors."""
    out: list[Any] = []
    after = None
    while True:
        query = {"limit": limit, **params} | ({"starting_after": after} if after else {})
        page = c.get(path, headers=headers, params=query).json()
        assert page["object"] == "list" and len(page["data"]) <= limit
        out += page["data"]
        if not page["has_more"]:
            return out
        after = str(page["data"][-1][key])
