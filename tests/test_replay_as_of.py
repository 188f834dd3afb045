"""`replay as-of`: a workspace's state at an instant or a version, from its events only."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.subscription import workspace_uuid
from projections.views import plan_state
from replay.as_of import as_of, document
from tests.conftest import utc
from tests.replay_histories import WORKSPACES, recorded, scripts
from tests.support import forms_on


def state_of(sub):
    return None if sub is None else {k: v for k, v in vars(sub).items() if k != "_pending_events"}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog=st.sampled_from(["forms", "workspace", "operations"]), data=st.data())
def test_as_of_every_events_instant_equals_the_aggregate_loaded_at_that_version(catalog, data):
    with recorded(catalog, data.draw(scripts(catalog))) as b:
        ledger = b.ledger
        for ws in WORKSPACES:
            events = ledger.workspace_events(ws)
            # The last fact stamped at or before each instant: a scheduler fact is stamped with the
            # instant it fell due, so it may follow a later-stamped payment (replay/as_of.py).
            last_at = {e.timestamp: max(f.originator_version for f in events if f.timestamp <= e.timestamp)
                       for e in events}
            for at, version in last_at.items():
                loaded = ledger.repository.get(workspace_uuid(ws), version=version)
                found = as_of(ledger, ws, at=at)
                assert state_of(found.sub) == state_of(loaded), (ws, at, version)
                assert state_of(as_of(ledger, ws, version=version).sub) == state_of(loaded)
                assert document(ledger, found)["state"] == plan_state(loaded, ledger.catalog_for(loaded))


def test_as_of_shows_the_plan_scheduled_change_open_invoices_and_renewal_forecast_then(book):
    b = forms_on(book, "team")
    b.do("ws", "set-members", members=2)
    b.at("2026-04-20T00:00:00")
    b.do("ws", "change-plan", plan="pro")  # scheduled for the period's end (R17)
    b.at("2026-05-15T00:00:00")  # May 1: Pro renewed and paid
    b.do("ws", "add-payment-method", payment_method="pm_card_chargeDeclined")
    b.at("2026-06-02T00:00:00")  # June 1: declined, left open
    then = document(b.ledger, as_of(b.ledger, "ws", at=utc("2026-04-25T00:00:00")))
    assert (then["state"]["plan"], then["state"]["members"]) == ("team", 2)
    assert then["state"]["scheduled_change"]["plan"] == "pro"
    assert then["upcoming_renewal"]["due_at"] == "2026-05-01T00:00:00Z"
    assert then["upcoming_renewal"]["plan"] == "pro" and then["upcoming_renewal"]["amount_due"] == "19.00"
    assert then["open_invoices"] == []
    now = document(b.ledger, as_of(b.ledger, "ws", at=utc("2026-06-02T00:00:00")))
    assert now["state"]["plan"] == "pro" and now["state"]["status"] == "past_due"
    assert [i["invoice_id"] for i in now["open_invoices"]] == ["in_ws_0003"]
    before_any = document(b.ledger, as_of(b.ledger, "ws", at=utc("2026-03-01T00:00:00")))
    assert before_any["version"] == 0


def test_recorded_before_ignores_what_the_ledger_recorded_later(book):
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00").do("ws", "change-plan", plan="team")
    known = as_of(b.ledger, "ws", at=utc("2026-04-30T00:00:00"), recorded_before=utc("2026-04-10T00:00:00"))
    assert known.sub.plan == "pro"
    assert as_of(b.ledger, "ws", at=utc("2026-04-30T00:00:00")).sub.plan == "team"
