"""R23: subscription AI credits belong to the time paid for. A grant window (each month, or each
period with `ai_grant_cadence = "period"`) is worth what was paid for it: when a change credits
back unused time, the window's unspent grant goes back with it, and credits spent beyond the
window's new worth are a debt taken from the next grants. Round trips are worthless."""

from __future__ import annotations

import pytest

from tests.conftest import utc
from tests.support import D, VISA, catalog_variant, types, workspace_on


def spend_all(b, ws="ws") -> int:
    """Consume every granted credit the workspace holds; how many that was."""
    held = b.sub(ws).ai_granted
    if held:
        assert b.do(ws, "consume-ai-credits", credits=held).ok
    return held


def round_trip(b, plan: str, ws: str = "ws") -> int:
    """Month -> year -> month -> year -> month on one day, spending every grant on the way."""
    spent = spend_all(b, ws)
    for interval in ("year", "month", "year", "month"):
        assert b.do(ws, "change-plan", plan=plan, interval=interval).ok
        spent += spend_all(b, ws)
    return spent


def test_R23_interval_round_trips_grant_no_free_ai_credits(book):
    """The audit's case: Business 10 seats monthly (3,000 granted), month -> year -> month ->
    year -> month on one day. Each annual -> monthly step credits the whole annual price back,
    so the net price is one month: 3,000 credits can be spent, not 15,000."""
    b = workspace_on(book, plan="business", seats=10)
    assert b.sub("ws").ai_granted == 3000
    assert round_trip(b, "business") == 3000
    sub = b.sub("ws")
    assert (sub.ai_granted, sub.ai_debt) == (0, 0)  # the month kept paid repaid what was spent early
    grants = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "AICreditsGranted"]
    assert [(g.credits, g.debt_repaid) for g in grants] == [(3000, 0)] + [(0, 3000)] * 4
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_debt) == (3000, 0)


def test_R23_round_trip_without_spending_leaves_one_window_of_credits(book):
    """The unspent grant goes back with the credited time: after the round trips the workspace
    holds exactly this month's 3,000, never 3,000 per cycle started."""
    b = workspace_on(book, plan="business", seats=10)
    for interval in ("year", "month", "year", "month"):
        result = b.do("ws", "change-plan", plan="business", interval=interval)
        assert "AICreditsProrated" in types(result)
        assert b.sub("ws").ai_granted == 3000
    granted = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "AICreditsProrated"]
    assert [(e.withdrawn, e.debt) for e in granted] == [(3000, 0)] * 4
    assert "3,000 - (3,000 - 0) x 30/30 days" in granted[0].formula


def test_R23_round_trip_ten_days_in_keeps_only_the_time_paid(book):
    """Ten days into April the monthly window has earned 1,000 of its 3,000: moving to annual
    after spending all 3,000 leaves a 2,000 debt, taken from the annual plan's first grant."""
    b = workspace_on(book, plan="business", seats=10)
    assert spend_all(b) == 3000
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="business", interval="year")
    (prorated,) = [e for e in result.events if type(e).__name__ == "AICreditsProrated"]
    assert (prorated.worth, prorated.withdrawn, prorated.debt) == (1000, 0, 2000)
    (granted,) = [e for e in result.events if type(e).__name__ == "AICreditsGranted"]
    assert (granted.credits, granted.debt_repaid, granted.expired) == (1000, 2000, 0)
    assert b.sub("ws").ai_debt == 0


def test_R23_downgrade_after_spending_the_grant_owes_the_difference(book):
    """Business 10 -> Team 10 on the day the grant was spent: the month is now worth Team's
    1,000, so 2,000 spent at Business's rate are repaid from May's and June's grants."""
    b = workspace_on(book, plan="business", seats=10)
    spend_all(b)
    assert b.do("ws", "change-plan", plan="team").ok
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_debt) == (0, 2000)
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_debt) == (0, 1000)
    b.at("2026-06-01T00:00:00")
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_debt) == (0, 0)
    b.at("2026-07-01T00:00:00")
    assert b.sub("ws").ai_granted == 1000


def test_R23_more_seats_change_future_grants_only(book):
    """A higher rate is not a top-up: the month's grant stays, the next one follows the seats."""
    b = workspace_on(book, plan="team", seats=5)
    b.at("2026-04-11T00:00:00")
    result = b.do("ws", "change-plan", plan="business")
    assert "AICreditsProrated" not in types(result)
    assert b.sub("ws").ai_granted == 500
    b.at("2026-05-01T00:00:00")
    assert b.sub("ws").ai_granted == 1500


def test_R23_annual_plans_grant_every_month_by_default(book):
    """Workspace catalog (`ai_grant_cadence = "month"`): Team annual 5 seats grants 500 on the
    anchor day of every month, the last on the eleventh month; the renewal opens the next year."""
    b = workspace_on(book, plan="team", seats=5, interval="year", start="2026-01-31T00:00:00")
    assert b.sub("ws").ai_grant_at == utc("2026-02-28T00:00:00")
    b.do("ws", "consume-ai-credits", credits=200)
    b.at("2026-02-28T00:00:00")
    assert b.sub("ws").ai_granted == 500
    assert b.sub("ws").ai_grant_at == utc("2026-03-31T00:00:00")
    b.at("2027-01-30T00:00:00")
    grants = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "AICreditsGranted"]
    assert len(grants) == 12
    assert grants[-1].timestamp == utc("2026-12-31T00:00:00") and grants[-1].next_grant_at is None
    b.at("2027-01-31T00:00:00")
    grants = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "AICreditsGranted"]
    assert len(grants) == 13 and grants[-1].next_grant_at == utc("2027-02-28T00:00:00")


def test_R23_period_cadence_grants_once_a_period(book, tmp_path):
    """A catalog with `ai_grant_cadence = "period"` grants an annual plan once a year."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-yearly-ai", ai_grant_cadence='"period"'))
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "subscribe", plan="team", seats=5, interval="year").ok
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_grant_at) == (500, None)
    b.at("2027-03-01T00:00:00")
    grants = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "AICreditsGranted"]
    assert [g.timestamp for g in grants] == [utc("2026-04-01T00:00:00"), utc("2027-04-01T00:00:00")][:1]


@pytest.mark.parametrize("cadence", ['"month"', '"period"'])
def test_R23_interval_round_trips_are_worthless_on_a_custom_catalog(book, tmp_path, cadence):
    """The same round trip on a catalog that credits removed seats and grants per period."""
    b = book(catalog_variant(tmp_path, "workspace", "workspace-custom-ai", ai_grant_cadence=cadence,
                             seat_removal_credit="true"))
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "subscribe", plan="business", seats=10).ok
    assert round_trip(b, "business") == 3000


def test_R23_annual_downgrade_revalues_only_the_current_month(book):
    """Business annual (monthly grants of 3,000) -> Team annual ten days into the first month:
    the rest of that month is re-valued at Team's 1,000; the next months grant 1,000."""
    b = workspace_on(book, plan="business", seats=10, interval="year")
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="team").ok
    assert b.sub("ws").ai_granted == 3000 - 1334  # (3,000 - 1,000) x 20/30 rounded up
    b.at("2026-05-01T00:00:00")
    assert (b.sub("ws").ai_granted, b.sub("ws").ai_debt) == (1000, 0)
