"""How facts are stored: versioned events, snapshots, retries, and history that never moves."""

import json
from decimal import Decimal

from eventsourcing.persistence import IntegrityError, StoredEvent

from adapters.app import build_ledger
from domain.catalog import load_catalog
from domain.commands import parse_command
from domain.ledger import Ledger
from domain.subscription import Subscription, workspace_uuid
from tests.conftest import ADMIN


def test_events_are_versioned_and_old_versions_are_upcast(book):
    """A MembersChanged written as v1 (no `previous`, no command id) still loads, upcast by the library."""
    b = book("forms")
    b.do("ws", "set-members", members=2)
    ledger = b.ledger
    current = ledger.workspace_events("ws")[-1]
    assert type(current).__name__ == "MembersChanged" and current.previous == 0
    stored = ledger.mapper.to_stored_event(current)
    state = json.loads(stored.state)
    assert state.pop("class_version") == 3
    for added_later in ("previous", "command_id", "catalog_hash"):
        state.pop(added_later)
    state["members"] = 7
    old = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=current.originator_version + 1,
        topic=stored.topic,
        state=json.dumps(state).encode(),
    )
    ledger.recorder.insert_events([old])
    upcast = ledger.workspace_events("ws")[-1]
    assert (upcast.members, upcast.previous, upcast.command_id) == (7, None, None)
    assert b.sub("ws").members == 7


def test_snapshots_reproduce_the_state_that_replaying_every_event_gives(book):
    b = book("workspace")
    b.do("w", "add-payment-method", payment_method="pm_card_visa")
    b.do("w", "subscribe", plan="team", interval="month", seats=3)
    for n in range(55):
        b.do("w", "set-members", members=n % 3)
    live = b.sub("w")
    assert [s.originator_version for s in b.ledger.snapshots.get(live.id)] == [50]
    replayed = None
    for event in b.ledger.events.get(live.id):
        replayed = event.mutate(replayed)
    assert replayed.__dict__ == live.__dict__


def test_concurrent_write_is_retried_with_the_rules_checked_again(book, monkeypatch):
    """Optimistic concurrency: a conflicting save is retried on the reloaded aggregate."""
    b = book("forms")
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    real_record = Ledger._record
    conflicts = []

    def record_conflicting_once(self, processing_event):
        if not conflicts:
            conflicts.append(1)
            raise IntegrityError("simulated concurrent writer")
        return real_record(self, processing_event)

    monkeypatch.setattr(Ledger, "_record", record_conflicting_once)
    result = b.do("ws", "subscribe", plan="pro", interval="month")
    assert result.ok and conflicts == [1]
    assert [type(e).__name__ for e in b.ledger.workspace_events("ws")].count("Subscribed") == 1


def test_a_later_catalog_edit_never_changes_what_history_charged(db_url, tmp_path):
    """Events record the prices they used: the unused-time credit uses the 19.00 paid, not a new price."""
    from tests.conftest import Book

    b = Book(db_url, "forms", "2026-04-01T00:00:00")
    b.do("ws", "add-payment-method", payment_method="pm_card_visa")
    b.do("ws", "subscribe", plan="pro", interval="month")
    b.close()
    edited = (load_catalog("forms").model_dump_json())
    data = json.loads(edited)
    data["version"] = "2026-12-01"
    next(p for p in data["plans"] if p["id"] == "pro")["prices"]["month"] = "25.00"
    catalogs = {"forms": load_catalog("forms").model_validate(data)}
    later = Book(db_url, "forms", "2026-04-11T00:00:00")
    later.ledger.catalogs.update(catalogs)
    result = later.do("ws", "change-plan", plan="team")
    (invoice,) = result.invoices()
    assert invoice.lines[0]["amount"] == Decimal("-12.67")
    assert result.events[0].catalog_version == "forms@2026-12-01"
    first = later.ledger.workspace_events("ws")[2]
    assert first.catalog_version == "forms@2026-11-23"
    later.close()


def test_every_event_carries_actor_role_channel_and_cause(book):
    """R3: who, when, through which channel, and why."""
    b = book("forms")
    b.ledger.handle("ws", parse_command("set-members", {"members": 1}), ADMIN, channel="web", reason="hired")
    event = b.ledger.workspace_events("ws")[-1]
    assert (event.actor_id, event.actor_role, event.channel, event.cause, event.reason) == (
        "alice", "admin", "web", "set-members", "hired")
    assert event.timestamp == b.clock.now()


def test_workspace_ids_map_to_stable_aggregate_ids():
    assert workspace_uuid("ws") == workspace_uuid("ws") != workspace_uuid("ws2")
    assert issubclass(Subscription.UpgradePaymentFailed, Subscription.ChargeDeclined)


def test_build_ledger_refuses_an_unknown_database_url():
    import pytest

    with pytest.raises(ValueError, match="unsupported database URL"):
        build_ledger("mysql://nope")


def test_a_custom_catalog_is_published_with_the_events_and_found_without_its_file(db_url, tmp_path):
    """A workspace on a custom catalog is read and advanced by a ledger that never saw the file."""
    from tests.conftest import Book
    from tests.support import catalog_variant

    path = catalog_variant(tmp_path, "forms", "forms-eu")
    first = Book(db_url, path, "2026-04-01T00:00:00")
    first.do("ws", "add-payment-method", payment_method="pm_card_visa")
    assert first.do("ws", "subscribe", plan="pro", interval="month").ok
    first.close()
    later = Book(db_url, "forms", "2026-05-02T00:00:00")
    later.ledger.advance()
    sub = later.sub("ws")
    assert sub.catalog_id == "forms-eu"
    assert sub.period_start.isoformat() == "2026-05-01T00:00:00+00:00"
    assert [e.catalog_id for e in later.ledger.catalog_log.get()] == ["forms-eu"]
    later.close()
