"""Ledgers written by older code still load, replay and verify as that code read them.

tests/fixtures/*.db were written at commit c818b20 (tests/fixtures/make_fixtures.py) and
manifest.json says what that code read from them: per workspace the state a user is shown, the
invoices, and how many events are stored. Every test opens a copy: the fixtures never change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import project_aggregate

from adapters.app import build_ledger, read_models
from domain.ledger import Ledger
from projections import audit_trail
from projections.invoices import invoices_of
from projections.journal import trial_balance
from projections.plan_state import read_plan_state
from projections.views import plan_state

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
NOT_STATE = ("invoices", "events")
C818B20_READ_MODELS = ("plan_state", "upcoming_invoice", "invoices", "journal", "audit_trail")
"""The read models c818b20 kept (later ones start empty and catch up on first use)."""
WORKSPACES = [(name, ws) for name, fixture in MANIFEST.items() for ws in fixture["workspaces"]]


def expected_state(name: str, ws: str) -> dict[str, Any]:
    return {k: v for k, v in MANIFEST[name]["workspaces"][ws].items() if k not in NOT_STATE}


def shown(state: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in keys}


def invoice_summary(conn: Any, ws: str) -> list[dict[str, Any]]:
    """What `subledger invoices WS` shows, cut to id, amount due and status."""
    return [{"id": i["invoice_id"], "amount_due": i["amount_due"], "status": i["status"]} for i in invoices_of(conn, ws)]


@pytest.fixture
def open_fixture(tmp_path: Path) -> Iterator[Any]:
    """open_fixture(name) -> a Ledger on a fresh copy of tests/fixtures/NAME; closed afterwards."""
    opened: list[Ledger] = []

    def open_(name: str) -> Ledger:
        copy = tmp_path / name
        shutil.copyfile(FIXTURES / name, copy)
        opened.append(build_ledger(f"sqlite:///{copy}"))
        return opened[-1]

    yield open_
    for ledger in opened:
        ledger.close()


@pytest.mark.parametrize("name", MANIFEST)
def test_a_fixture_file_is_the_one_c818b20_wrote(name):
    """The files are history: nothing (a test, a later generator) has rewritten them."""
    data = (FIXTURES / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["sha256"]
    raw = sqlite3.connect(f"file:{FIXTURES / name}?mode=ro", uri=True)
    try:
        assert raw.execute("SELECT count(*) FROM stored_events").fetchone()[0] == MANIFEST[name]["stored_events"]
        assert raw.execute("SELECT count(*) FROM stored_snapshots").fetchone()[0] == MANIFEST[name]["snapshots"]
        v1 = raw.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%MembersChanged' "
                         "AND CAST(state AS TEXT) NOT LIKE '%\"class_version\"%'").fetchone()[0]
        assert v1 == MANIFEST[name]["members_changed_v1"]
    finally:
        raw.close()


@pytest.mark.parametrize("name", MANIFEST)
def test_every_workspace_of_a_fixture_ledger_is_listed(open_fixture, name):
    ledger = open_fixture(name)
    assert ledger.workspaces() == list(MANIFEST[name]["workspaces"])


@pytest.mark.parametrize(("name", "ws"), WORKSPACES)
def test_a_fixture_workspace_loads_as_c818b20_showed_it(open_fixture, name, ws):
    """Loaded (from its snapshot where there is one), a workspace shows the same plan, status,
    seats, billing credit and open invoice, with the same number of stored events."""
    ledger = open_fixture(name)
    sub = ledger.get(ws)
    expected = expected_state(name, ws)
    assert shown(plan_state(sub, ledger.catalog_for(sub)), expected) == expected
    assert len(ledger.workspace_events(ws)) == MANIFEST[name]["workspaces"][ws]["events"]


@pytest.mark.parametrize(("name", "ws"), WORKSPACES)
def test_replaying_every_stored_event_gives_the_same_workspace(open_fixture, name, ws):
    """No snapshot: old event versions are upcast and folded one by one."""
    ledger = open_fixture(name)
    replayed = project_aggregate(None, ledger.workspace_events(ws))
    expected = expected_state(name, ws)
    assert shown(plan_state(replayed, ledger.catalog_for(replayed)), expected) == expected


@pytest.mark.parametrize("name", MANIFEST)
def test_the_stored_read_models_still_read_and_verify(open_fixture, name):
    """The read-model tables written at c818b20: current, the same states and invoices, the
    audit hash chain intact and the books balanced."""
    fixture = MANIFEST[name]
    ledger = open_fixture(name)
    with read_models(ledger) as projections, projections.engine.connect() as conn:
        lags = {s["projection"]: s["lag"] for s in projections.status()}
        assert {f: lags[f] for f in C818B20_READ_MODELS} == {f: 0 for f in C818B20_READ_MODELS}
        for ws, expected in fixture["workspaces"].items():
            state = expected_state(name, ws)
            assert shown(read_plan_state(conn, ws), state) == state
            assert invoice_summary(conn, ws) == expected["invoices"]
        assert audit_trail.verify(conn) == {"ok": True, "rows": fixture["audit_rows"],
                                            "workspaces": len(fixture["workspaces"])}
        assert trial_balance(conn) == {k: Decimal(v) for k, v in fixture["trial_balance"].items()}


@pytest.mark.parametrize("name", MANIFEST)
def test_the_read_models_rebuilt_from_the_stored_events_say_the_same(open_fixture, name):
    """`subledger project rebuild`: every read model replayed from the old events."""
    fixture = MANIFEST[name]
    ledger = open_fixture(name)
    with read_models(ledger) as projections:
        projections.rebuild()
        with projections.engine.connect() as conn:
            for ws, expected in fixture["workspaces"].items():
                state = expected_state(name, ws)
                assert shown(read_plan_state(conn, ws), state) == state
                assert invoice_summary(conn, ws) == expected["invoices"]
            assert audit_trail.verify(conn)["ok"]
            assert audit_trail.verify(conn)["rows"] == fixture["audit_rows"]
            assert trial_balance(conn) == {k: Decimal(v) for k, v in fixture["trial_balance"].items()}


def test_R8_an_old_ledger_goes_on_under_new_code_with_fresh_invoice_ids(tmp_path):
    """members_v1.db's past-due workspaces pay their open invoices with a good card: one charge
    each, under keys and invoice ids the old history never used."""
    from domain.commands import Actor, parse_command
    from domain.ledger import TestClock

    copy = tmp_path / "members_v1.db"
    shutil.copyfile(FIXTURES / "members_v1.db", copy)
    probe = build_ledger(f"sqlite:///{copy}")
    last = max(e.timestamp for ws in probe.workspaces() for e in probe.workspace_events(ws))
    probe.close()
    ledger = build_ledger(f"sqlite:///{copy}", clock=TestClock(last))
    admin = Actor(id="alice", role="admin")
    try:
        for ws in ("dunning", "declined"):
            before = ledger.get(ws)
            old_ids = {e.invoice_id for e in ledger.workspace_events(ws) if type(e).__name__ == "InvoiceIssued"}
            assert before.open_invoices(), ws
            assert ledger.handle(ws, parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), admin).ok
            for invoice in before.open_invoices():
                paid = ledger.handle(ws, parse_command("pay-invoice", {"invoice": invoice}), admin)
                assert paid.ok, (ws, invoice, paid.error)
            after = ledger.get(ws)
            assert (after.status, after.open_invoices()) == ("active", [])
            assert after.next_invoice_id() not in old_ids
        gateway = ledger.payments.charges()
        assert [c["outcome"] for c in gateway] == ["succeeded"] * len(gateway)
        assert len({c["idempotency_key"] for c in gateway}) == len(gateway)
    finally:
        ledger.close()


def test_topics_stored_before_the_split_resolve_to_the_moved_classes():
    """The events moved from domain.events and the aggregate from domain.subscription into the
    domain/subscription/ package; topics stored before still name the old places."""
    from eventsourcing.utils import resolve_topic

    from domain.subscription import Subscription

    with sqlite3.connect(FIXTURES / "members_v1.db") as conn:
        topics = {t for (t,) in conn.execute("SELECT DISTINCT topic FROM stored_events")}
        state = json.loads(conn.execute("SELECT state FROM stored_snapshots").fetchone()[0])
    assert "domain.events:MembersChanged" in topics
    for topic in topics:
        if topic.startswith("domain.events:"):
            assert resolve_topic(topic) is getattr(Subscription, topic.split(":")[1])
    assert state["topic"] == "domain.subscription:Subscription"
    assert resolve_topic(state["topic"]) is Subscription
