"""Operations reported while a charge holds a change to them (R16, R19; domain/subscription/
operations_pools.py): an upgrade awaiting the customer's 3-D Secure was priced on the pools as
they stood, so once it is paid the reports that came in meanwhile count against the new tier,
as if it had been paid at once; abandoned, they stay where they were taken from."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import D, VISA, catalog_variant, lines, only_invoice, types

THREE_DS = "pm_card_authenticationRequired"


def core_10k(book, tmp_path, **policy):
    catalog = catalog_variant(tmp_path, "operations", "operations-custom", **policy) if policy else "operations"
    b = book(catalog, "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="core", tier=10_000).ok
    return b


def upgrade_waiting(b, **target):
    assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
    waiting = b.do("ws", "change-plan", plan="core", **target)
    assert waiting.error.code == "payment_action_required"
    return waiting.events[0].charge_key


def confirmed(b, key):
    b.payments.confirm(key)
    b.ledger.resolve_payments("ws")
    return b.sub("ws")


def unbilled(sub):
    return sum(p["operations"] for p in sub.ops_overage)


def test_R16_operations_used_while_an_upgrade_awaits_authentication_count_against_the_new_tier(book, tmp_path):
    """Core 10,000 -> 20,000 credits the 10,000 unused then (10.59); the 10,000 reported while the
    customer authenticates are then taken from the 20,000, never credited as unused and kept."""
    b = core_10k(book, tmp_path)
    key = upgrade_waiting(b, tier=20_000)
    assert b.do("ws", "record-usage", operations=10_000).ok
    assert b.sub("ws").operations_remaining == 0
    sub = confirmed(b, key)
    assert (sub.tier, sub.operations_remaining) == (20_000, 10_000)
    paid = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert lines(paid) == [("operations_credit", D("-10.59")), ("plan_charge", D("18.82"))]  # as quoted
    assert "OperationsRecounted" in [type(e).__name__ for e in b.ledger.workspace_events("ws")]


def test_R19_overage_reported_while_a_new_cycle_awaits_authentication_is_not_dropped(book, tmp_path):
    """The upgrade bills the 2,000 over the allowance it was priced on; the 5,000 reported while it
    waited count against the new 20,000, not as overage erased by the upgrade's bill."""
    b = core_10k(book, tmp_path, overage='"bill"')
    assert b.do("ws", "record-usage", operations=12_000).ok
    key = upgrade_waiting(b, tier=20_000)
    assert b.do("ws", "record-usage", operations=5_000).ok
    sub = confirmed(b, key)
    assert (sub.operations_remaining, unbilled(sub)) == (15_000, 0)
    upgrade = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert [(line["kind"], line["quantity"]) for line in upgrade.lines] == [("plan_charge", 1),
                                                                          ("operations_overage", 2_000)]


def test_R19_overage_reported_while_an_upgrade_keeping_the_cycle_waits_is_billed_once_at_the_new_rate(book, tmp_path):
    """Ten days in, Core 10,000 -> 20,000 keeping the cycle: 13,333 operations for the rest of it.
    The 2,000 over before the upgrade stay billed at Core 10,000's rate; the 20,000 reported while
    it waited take the 13,333 and leave 6,667 over at the new tier's rate (not 20,000 at the old)."""
    b = core_10k(book, tmp_path, overage='"bill"', upgrade_new_cycle="false")
    assert b.do("ws", "record-usage", operations=12_000).ok
    b.at("2026-04-11T00:00:00")
    key = upgrade_waiting(b, tier=20_000)
    assert b.do("ws", "record-usage", operations=20_000).ok
    sub = confirmed(b, key)
    assert sub.operations_remaining == 0
    assert sorted((p["operations"], p["rate"]["operations"]) for p in sub.ops_overage) == [(2_000, 10_000),
                                                                                          (6_667, 20_000)]
    b.at("2026-05-01T00:00:00")
    renewal = [e for e in b.ledger.workspace_events("ws") if type(e).__name__ == "InvoiceIssued"][-1]
    assert [(line["kind"], line["quantity"]) for line in renewal.lines] == [("plan_charge", 1),
                                                                          ("operations_overage", 8_667)]


def test_R12_operations_reported_while_an_abandoned_upgrade_waited_stay_on_the_old_tier(book, tmp_path):
    b = core_10k(book, tmp_path)
    upgrade_waiting(b, tier=20_000)
    assert b.do("ws", "record-usage", operations=4_000).ok
    assert types_of(b.ledger.abandon_payment("ws")) == ["UpgradePaymentFailed"]
    sub = b.sub("ws")
    assert (sub.tier, sub.operations_remaining) == (10_000, 6_000)
    assert "OperationsRecounted" not in [type(e).__name__ for e in b.ledger.workspace_events("ws")]


def test_R16_a_purchase_that_leaves_the_pools_alone_records_no_recount(book, tmp_path):
    """Extra operations bought with 3-D Secure add to the pools: reports meanwhile stand as taken."""
    b = core_10k(book, tmp_path)
    assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
    waiting = b.do("ws", "buy-operations", operations=10_000)
    assert waiting.error.code == "payment_action_required"
    assert b.do("ws", "record-usage", operations=3_000).ok
    sub = confirmed(b, waiting.events[0].charge_key)
    assert sub.operations_remaining == 17_000
    assert "OperationsRecounted" not in [type(e).__name__ for e in b.ledger.workspace_events("ws")]


def types_of(events):
    return [type(e).__name__ for e in events]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(overage=st.sampled_from(['"bill"', '"allow"', '"block"']), new_cycle=st.booleans(),
       before=st.integers(0, 15_000), during=st.lists(st.integers(1, 30_000), max_size=3),
       tier=st.sampled_from([40_000, 150_000]), completes=st.booleans(), days=st.integers(0, 20))
def test_R16_R19_replay_redecides_a_wait_with_usage_as_it_was_recorded(tmp_path_factory, overage, new_cycle, before,
                                                                         during, tier, completes, days):
    """Whatever was used before and during the wait, and however it ended: replaying the history
    with the same pricing gives the recorded invoices, and the renewal after it too."""
    from datetime import timedelta

    from replay.invoice_verify import verify_invoices
    from replay.what_if import Pricing, what_if
    from tests.conftest import Book
    from tests.support import catalog_variant

    tmp = tmp_path_factory.mktemp("wait")
    catalog = catalog_variant(tmp, "operations", "ops-wait", overage=overage, upgrade_new_cycle=str(new_cycle).lower())
    b = Book(f"sqlite:///{tmp}/ledger.db", catalog, "2026-04-01T00:00:00")
    try:
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
        assert b.do("ws", "subscribe", plan="core", tier=10_000).ok
        if before:
            b.do("ws", "record-usage", operations=before)
        b.at((b.clock.now() + timedelta(days=days)).isoformat().replace("+00:00", ""))
        assert b.do("ws", "add-payment-method", payment_method=THREE_DS).ok
        waiting = b.do("ws", "change-plan", plan="core", tier=tier)
        for operations in during:
            b.do("ws", "record-usage", operations=operations)
        if waiting.error is not None and waiting.error.code == "payment_action_required":
            if completes:
                b.payments.confirm(waiting.events[0].charge_key)
                b.ledger.resolve_payments("ws")
            else:
                b.ledger.abandon_payment("ws")
        b.at("2026-06-15T00:00:00")
        assert verify_invoices(b.ledger)["ok"]
        report = what_if(b.ledger, Pricing())
        assert [i["status"] for ws in report["workspaces"] for i in ws["invoices"]] == \
            ["same"] * report["summary"]["invoices"]
    finally:
        b.close()
