"""`replay verify`: every issued invoice recomputed from its events by the engine as it is now.
It passes on the fixture ledgers written by older code, and names the invoice when a price
formula changes."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.app import build_ledger
from adapters.cli import app
from domain import pricing
from domain.ledger import TestClock
from domain.text import plural
from replay.as_of import as_of, invoices_then
from replay.explain import explain
from replay.invoice_verify import verify_invoices
from replay.what_if import Pricing, what_if
from tests.support import DECLINED, VISA, forms_on, only_invoice

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
THREE_DS = "pm_card_authenticationRequired"


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_fixture_ledgers_of_older_code_keep_replaying_explaining_and_verifying(name, tmp_path):
    """Written at c818b20 (tests/fixtures/README.md): facts without command ids or catalog
    hashes, v1 MembersChanged, declines that consumed no invoice number, a snapshot."""
    copy = tmp_path / name
    shutil.copy(FIXTURES / name, copy)
    url = f"sqlite:///{copy}"
    expected = MANIFEST[name]["workspaces"]
    ledger = build_ledger(url, clock=TestClock(datetime(2030, 1, 1, tzinfo=timezone.utc)))
    try:
        report = verify_invoices(ledger)
        assert report["differences"] == []
        assert (report["ok"], report["workspaces"]) == (True, len(expected))
        assert report["invoices"] == sum(len(ws["invoices"]) for ws in expected.values())
        for ws, shown in expected.items():
            then = as_of(ledger, ws, at=datetime(2030, 1, 1, tzinfo=timezone.utc))
            invoices = invoices_then(then.sub, then.events)  # paid ones are no longer kept in the aggregate
            assert (then.sub.plan, then.sub.status, len(invoices)) == (shown["plan"], shown["status"],
                                                                       len(shown["invoices"]))
            for invoice in shown["invoices"]:
                assert explain(ledger, invoice["id"])["totals"]["amount_due"] == invoice["amount_due"]
        assert what_if(ledger, Pricing())["summary"]["differences"] == 0
    finally:
        ledger.close()
    done = CliRunner().invoke(app, ["--db", url, "replay", "verify"])
    assert done.exit_code == 0, done.output
    assert f"{plural(report['invoices'], 'invoice')} of {plural(len(expected), 'workspace')} recomputed, all as " \
        "recorded" in done.output


def round_down(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def test_verify_fails_naming_the_invoice_when_the_proration_rounding_changes(book, monkeypatch, db_url):
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00")
    upgrade = only_invoice(b.do("ws", "change-plan", plan="team"))
    b.at("2026-05-02T00:00:00")
    assert verify_invoices(b.ledger)["ok"]
    monkeypatch.setattr(pricing, "round_half_up", round_down)  # 12.666667 -> 12.66, no longer 12.67
    report = verify_invoices(b.ledger)
    assert not report["ok"] and report["invoices"] == 3
    (found,) = report["differences"]
    assert (found["workspace"], found["invoice_id"]) == ("ws", upgrade.invoice_id)
    assert {"field": "line 1 amount", "recorded": Decimal("-12.67"), "recomputed": Decimal("-12.66")} in found["problems"]
    done = CliRunner().invoke(app, ["--db", db_url, "replay", "verify"])
    assert done.exit_code == 1
    assert f"{upgrade.invoice_id} (ws, versions" in done.output
    assert "line 1 amount: recorded -12.67, recomputed -12.66" in done.output


def test_declines_3d_secure_and_late_outcomes_replay_as_recorded(book):
    """A charge confirmed hours later, a renewal waiting on 3-D Secure that fails when the card
    is replaced, and an upgrade abandoned unconfirmed: their outcomes come back in the
    runs that recorded them."""
    b = forms_on(book, "pro")
    b.do("ws", "add-payment-method", payment_method=THREE_DS)
    b.at("2026-04-11T00:00:00")
    waiting = b.do("ws", "change-plan", plan="team")
    b.do("ws", "set-members", members=2)
    b.at("2026-04-11T20:00:00")
    b.payments.confirm(waiting.events[0].charge_key)
    b.ledger.resolve_payments("ws")
    b.at("2026-05-01T00:00:00")
    b.do("ws", "add-payment-method", payment_method=VISA)
    b.do("late", "add-payment-method", payment_method=VISA)
    b.do("late", "subscribe", plan="pro", interval="month")
    b.do("late", "add-payment-method", payment_method=THREE_DS)
    b.at("2026-05-10T00:00:00").do("late", "change-plan", plan="team")
    b.do("late", "add-payment-method", payment_method=DECLINED)
    b.at("2026-06-05T00:00:00")
    names = [type(e).__name__ for e in b.ledger.workspace_events("late")]
    assert "UpgradePaymentFailed" in names and "PaymentFailed" in names
    report = verify_invoices(b.ledger)
    assert report["ok"] and report["invoices"] == 6, report  # 4 for ws, 2 for late (its upgrade was never issued)
    assert what_if(b.ledger, Pricing())["summary"]["differences"] == 0
