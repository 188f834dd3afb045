"""The read models' fast JSON and decoding paths say exactly what the slow ones said: audit
hashes made before them still verify, and every event reads as the library reads it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections import audit_trail
from projections.decoding import Decoder, select_rows
from projections.store import _default, dumps

ROW = {"position": 7, "workspace": "acme", "version": 3, "occurred_at": datetime(2026, 4, 1, tzinfo=timezone.utc),
       "actor_id": "u\u00e9", "actor_role": "admin", "channel": "api", "cause": "subscribe",
       "reason": "=1+1\n\ttab \u2028 \x01", "idempotency_key": None, "event_type": "PlanSet", "summary": "Pro -> Team",
       "before": '{"plan":"pro"}', "after": '{"plan":"team"}', "money_impact": Decimal("20"), "currency": "USD",
       "catalog_version": None}


def stdlib(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


documents = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@given(documents)
def test_json_cells_are_the_standard_librarys_canonical_text(doc: Any) -> None:
    assert dumps(doc) == stdlib(doc)


def test_the_audit_hash_covers_the_same_text_as_before() -> None:
    for row in (ROW, {**ROW, "money_impact": None, "occurred_at": datetime(2026, 4, 1, 2, tzinfo=timezone(timedelta(hours=2)))}):
        assert audit_trail.canonical(row) == audit_trail._canonical_slow(row)


def test_notifications_decode_to_the_events_the_library_makes(book: Any) -> None:
    b = book("forms", "2026-04-01T00:00:00")
    b.do("acme", "add-payment-method", payment_method="pm_card_visa")
    b.do("acme", "subscribe", plan="pro", interval="month")
    b.at("2026-04-11T00:00:00").do("acme", "change-plan", plan="team")
    b.at("2026-06-02T00:00:00")
    ledger = b.ledger
    rows = select_rows(ledger.recorder, 1, 1000)
    expected = [ledger.mapper.to_domain_event(n) for n in ledger.recorder.select_notifications(start=1, limit=1000)]
    got = Decoder(ledger.mapper).decode_all(rows)
    assert len(rows) > 10
    assert [(type(e), list(vars(e).items())) for e in got] == [(type(e), list(vars(e).items())) for e in expected]
