"""Property (issue 7): over random sequences of plan, interval, seat, add-on and AI credit changes
within one period, on the workspace catalog and on a custom one (seat removals credited, AI
credits granted once a period), a workspace never ends with

1. more subscription AI credits than it paid for: credits spent from grants plus those still
   held, less the credit debt it owes, never exceed the plan money it kept (charges less credits
   for unused time) at the catalog's most generous credits-per-money rate (R23, R10);
2. more billing credit than it paid for: never more than the cash it paid, less AI credit packs,
   which are never refunded (R10, R27);

and 3. the journal balances and every read model agrees with the ledger (SQLite).
"""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.app import build_ledger
from adapters.payments import TestPaymentGateway
from domain.catalog import Catalog
from domain.commands import Actor, parse_command
from domain.errors import LedgerError
from domain.ledger import TestClock
from domain.subscription import Subscription, workspace_uuid
from domain.subscription.billing_events import line_item
from projections.runner import Projections
from tests.conftest import utc
from tests.readmodels import check_against_ledger
from tests.support import catalog_variant

ADMIN = Actor(id="alice", role="admin")
WS = "w1"
PERIOD_DAYS = 20
"""Every step stays inside the first period and the first grant window (28 days from Jan 31)."""
MONTH_SLACK = Decimal("1.15")
"""A grant month is 28-31 days, a twelfth of a year's money covers 30.4: a month's credits can
cost up to 365/12/28 of the rate a whole year works out at."""


def command(name: str, **args: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.fixed_dictionaries(args).map(lambda a: (name, {k: v for k, v in a.items() if v is not None}))


PAID = st.sampled_from(["team", "business"])
INTERVAL = st.sampled_from(["month", "year"])
SEATS = st.integers(1, 12)
STEP = st.one_of(
    command("change-plan", plan=PAID, interval=st.one_of(st.none(), INTERVAL), seats=st.one_of(st.none(), SEATS)),
    command("change-plan", plan=PAID, interval=INTERVAL),
    command("change-plan", plan=st.just("free")),
    command("set-seats", seats=SEATS),
    command("set-storage-addon", addon=st.sampled_from([None, "storage-100gb", "storage-1tb"])),
    command("buy-ai-credits", pack=st.just("ai-1000")),
    command("spend-ai-credits"),
    command("spend-ai-credits"),
    command("advance", hours=st.integers(1, 72)),
)
SCRIPT = st.tuples(
    command("subscribe", plan=PAID, interval=INTERVAL, seats=SEATS),
    st.lists(STEP, min_size=4, max_size=16),
)


def credits_per_money(catalog: Catalog) -> Decimal:
    """The most AI credits a unit of plan money buys on this catalog."""
    rates = []
    for plan in catalog.plans:
        for interval, price in plan.prices.items():
            windows = 12 if interval == "year" and catalog.policy.ai_grant_cadence == "month" else 1
            rates.append(Decimal(plan.ai_credits_per_seat * windows) / price)
    return max(rates)


def run(catalog_ref: str, script: tuple[Any, ...]) -> None:
    opening, steps = script
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/p.db"
        clock = TestClock(utc("2026-01-31T00:00:00"))
        ledger = build_ledger(url, catalog=catalog_ref, clock=clock, payments=TestPaymentGateway(url))
        try:
            ledger.handle(WS, parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), ADMIN)
            assert ledger.handle(WS, parse_command(*opening), ADMIN).ok
            elapsed = timedelta()
            for name, args in steps:
                if name == "advance":
                    step = timedelta(hours=args["hours"])
                    if elapsed + step < timedelta(days=PERIOD_DAYS):
                        elapsed += step
                        clock.move_to(clock.now() + step)
                        ledger.advance()
                    continue
                if name == "spend-ai-credits":
                    sub = ledger.get(WS)
                    name, args = "consume-ai-credits", {"credits": sub.ai_granted + sub.ai_purchased}
                    if not args["credits"]:
                        continue
                try:
                    cmd = parse_command(name, args)
                except LedgerError:
                    continue
                ledger.handle(WS, cmd, ADMIN)
            check_paid_for(ledger, ledger.catalog_for(ledger.get(WS)))
            with Projections(dict(ledger.env), source=ledger) as projections:
                projections.catch_up()
                check_against_ledger(ledger, projections.engine)
        finally:
            ledger.close()


def check_paid_for(ledger: Any, catalog: Catalog) -> None:
    kept = cash = packs = Decimal(0)
    spent_from_grants = 0
    for event in ledger.events.get(workspace_uuid(WS)):
        if isinstance(event, Subscription.InvoiceIssued):
            kept += sum((line["amount"] for line in event.lines if line_item(line["kind"]) == "plan"), Decimal(0))
            packs += sum((line["amount"] for line in event.lines if line["kind"] == "ai_credit_pack"), Decimal(0))
        elif isinstance(event, Subscription.PaymentSucceeded):
            cash += event.amount
        elif isinstance(event, Subscription.AICreditsConsumed):
            spent_from_grants += event.from_granted
    sub = ledger.get(WS)
    obtained = spent_from_grants + sub.ai_granted - sub.ai_debt
    paid_for = math.ceil(credits_per_money(catalog) * MONTH_SLACK * kept)
    assert obtained <= paid_for, (obtained, kept, sub.ai_debt)
    assert Decimal(0) <= sub.billing_credit <= cash - packs, (sub.billing_credit, cash, packs)


PROPERTY_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(script=SCRIPT)
def test_R23_R10_workspace_never_ends_with_more_ai_or_billing_credit_than_it_paid_for(script):
    run("workspace", script)


@PROPERTY_SETTINGS
@given(script=SCRIPT)
def test_R23_R10_custom_catalog_never_ends_with_more_ai_or_billing_credit_than_it_paid_for(script):
    with tempfile.TemporaryDirectory() as tmp:
        run(catalog_variant(Path(tmp), "workspace", "workspace-generous", seat_removal_credit="true",
                            ai_grant_cadence='"period"'), script)
