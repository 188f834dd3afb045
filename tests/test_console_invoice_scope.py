"""A caller who may read one workspace learns nothing of another's invoices from the console
(docs/http.md: an invoice it may not read is 404, as one that does not exist), and an invoice
id never makes a page read other workspaces' events."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from adapters.console.web import COOKIE
from adapters.http.app import create_app
from domain.commands import Actor, AddPaymentMethod, Subscribe
from domain.ledger import TestClock
from tests.conftest import utc

NOW = utc("2026-06-10T00:00:00")


def test_console_invoice_page_does_not_reveal_another_workspaces_invoice(tmp_path: Any) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'l.db'}", clock=TestClock(NOW))
    ledger, admin = app.state.ledger, Actor(id="cli-admin", role="admin")
    ledger.handle("a", Subscribe(plan="free"), admin)
    ledger.handle("a_b", AddPaymentMethod(payment_method="pm_card_visa"), admin)
    assert ledger.handle("a_b", Subscribe(plan="pro"), admin).ok  # issues in_a_b_0001
    _, token = app.state.tokens.create("admin", "a")
    read: list[str] = []
    events = ledger.workspace_events
    ledger.workspace_events = lambda ws, *a, **k: (read.append(ws), events(ws, *a, **k))[1]
    with TestClient(app) as client:
        client.cookies.set(COOKIE, token)
        pages = [client.get(f"/console/workspaces/a/invoices/{i}")
                 for i in ("in_a_b_0001", "in_a_b_0002", "in_a_zzz_0001")]
    assert [p.status_code for p in pages] == [404, 404, 404]
    alerts = [p.text.split('role="alert">')[1].split("<")[0] for p in pages]
    assert alerts[0].replace("_b_0001", "") == alerts[1].replace("_b_0002", "") == alerts[2].replace("_zzz_0001", "")
    assert "a_b" not in read and "a_zzz" not in read


def test_explaining_an_invoice_of_no_workspace_reads_no_workspace(tmp_path: Any) -> None:
    from domain.errors import LedgerError
    from replay.explain import explain
    app = create_app(f"sqlite:///{tmp_path / 'l.db'}", clock=TestClock(NOW))
    ledger = app.state.ledger
    assert ledger.handle("a", Subscribe(plan="free"), Actor(id="cli-admin", role="admin")).ok
    read: list[str] = []
    events = ledger.workspace_events
    ledger.workspace_events = lambda ws, *a, **k: (read.append(ws), events(ws, *a, **k))[1]
    try:
        explain(ledger, "in_nobody_0001")
    except LedgerError as e:
        assert e.code == "not_found"
    else:
        raise AssertionError("explained an invoice of no workspace")
    assert read == ["nobody"]
