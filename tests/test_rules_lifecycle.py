"""A workspace's life: one trial per workspace (R15) and what a canceled workspace shows."""

from __future__ import annotations

import pytest

from pathlib import Path

from domain.catalog import Catalog
from tests.support import VISA, refused, state

NEWSLETTER = str(Path(__file__).parent / "scenarios" / "newsletter.toml")


@pytest.mark.parametrize("catalog", ["workspace", "newsletter"])
def test_R15_one_trial_per_workspace_even_at_one_instant(book, catalog):
    """The audit's case: trial -> free -> cancel -> trial worked, even at one instant."""
    b = book(NEWSLETTER if catalog == "newsletter" else catalog)
    free = "free" if catalog == "workspace" else "hobby"
    assert b.do("ws", "subscribe", plan="trial").ok
    assert b.do("ws", "change-plan", plan=free).ok
    assert b.do("ws", "cancel").ok
    result = refused(b, "ws", "trial_used", "subscribe", plan="trial")
    assert "has had its trial" in result.error.message
    assert b.do("ws", "subscribe", plan=free).ok


def test_R15_an_expired_trial_cannot_be_started_again(book):
    b = book("workspace")
    assert b.do("ws", "subscribe", plan="trial").ok
    b.at("2026-04-20T00:00:00")
    assert b.sub("ws").plan == "free"
    assert b.do("ws", "cancel").ok
    refused(b, "ws", "trial_used", "subscribe", plan="trial")


def test_R15_a_converted_trial_cannot_be_started_again(book):
    b = book("workspace")
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "subscribe", plan="trial").ok
    assert b.do("ws", "change-plan", plan="team", seats=2).ok
    assert b.do("ws", "cancel").ok
    b.at("2026-05-02T00:00:00")
    refused(b, "ws", "trial_used", "subscribe", plan="trial")


def test_R15_another_workspace_still_gets_its_trial(book):
    b = book("workspace")
    assert b.do("ws", "subscribe", plan="trial").ok
    assert b.do("other", "subscribe", plan="trial").ok


# ------------------------------------------------------------------ a canceled workspace shows canceled


@pytest.mark.parametrize("catalog", ["forms", "workspace", "operations", "newsletter"])
def test_canceled_workspace_shows_no_plan_interval_or_seats(book, catalog):
    """The audit's case: a canceled workspace still showed its old plan, interval and seats."""
    b = book(NEWSLETTER if catalog == "newsletter" else catalog)
    b.do("ws", "add-payment-method", payment_method=VISA)
    args = {"forms": {"plan": "pro"}, "workspace": {"plan": "team", "seats": 4},
            "operations": {"plan": "core", "tier": 10_000}, "newsletter": {"plan": "creator", "seats": 2}}[catalog]
    assert b.do("ws", "subscribe", **args).ok
    assert b.do("ws", "cancel").ok
    assert state(b, "ws")["plan"] == args["plan"]  # paid until the period ends
    b.at("2026-05-01T00:00:00")
    s = state(b, "ws")
    assert s["status"] == "canceled"
    assert (s["plan"], s["tier"], s["interval"], s["seats"], s["period_start"], s["period_end"]) == (None,) * 6
    assert (s["features"], s["over_seat"], s["ai_credits_granted"], s["operations_remaining"]) == ([], False, 0, 0)


def test_canceled_free_workspace_shows_canceled_at_once(book):
    b = book("workspace")
    assert b.do("ws", "subscribe", plan="free").ok
    assert b.do("ws", "set-members", members=5).ok
    assert b.do("ws", "cancel").ok
    s = state(b, "ws")
    assert (s["status"], s["plan"], s["seats"], s["over_seat"]) == ("canceled", None, None, False)


def test_R15_a_trial_on_a_catalog_published_before_the_fallback_check_just_ends(book):
    """A ledger may hold a catalog recorded before `catalog check` required a free plan to fall
    back to (published catalogs load as recorded): its trial ends with no plan, and the scheduler
    goes on for every other workspace, where it stopped for all of them."""
    b = book("workspace")
    legacy = Catalog.model_validate({"id": "legacy", "version": "1", "name": "Legacy", "currency": "USD", "plans": [
        {"id": "trial", "name": "Trial", "rank": 0, "kind": "trial", "trial_days": 14, "storage_gb": 1},
        {"id": "paid", "name": "Paid", "rank": 1, "kind": "paid", "storage_gb": 1, "prices": {"month": "9.00"}}]})
    b.ledger.catalogs["legacy"], b.ledger.default_catalog = legacy, "legacy"
    assert b.do("trialist", "subscribe", plan="trial").ok
    b.ledger.default_catalog = "workspace"
    assert b.do("payer", "add-payment-method", payment_method=VISA).ok
    assert b.do("payer", "subscribe", plan="team", seats=2).ok
    b.at("2026-05-02T00:00:00")
    assert state(b, "trialist")["status"] == "canceled"
    assert state(b, "payer")["period_end"].startswith("2026-06-01")
