"""journal: double-entry postings for every money event.

One entry per event (its global position), one row per posting. `amount` is signed: a
debit is positive, a credit negative, so every entry sums to zero and so does the trial
balance. Accounts (normal balance in brackets):

- receivable (debit): invoiced, not yet paid or settled with credit
- cash (debit): collected through the payment gateway
- revenue (credit): earned; credit lines for unused time are debits here
- deferred_revenue (credit): recurring lines billed for an annual period, recognised as
  revenue when that period closes (renewal, new cycle, cancellation)
- billing_credit (credit): the customer's account balance, never cash (R10)
- ai_credit_liability (credit): purchased AI credit packs not yet consumed (R23),
  recognised as revenue pro rata as purchased credits are spent
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import singledispatch
from typing import Any

from eventsourcing.persistence import Tracking
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.catalog import Catalog
from domain.money import ZERO
from domain.pricing import ai_credit_revenue, overflow
from domain.subscription import Subscription
from domain.subscription.billing_events import line_item
from projections.readmodel import ReadModel, event_ref
from projections.store import Amount, UtcDateTime, insert_rows

Posting = tuple[str, Decimal, str]
ACCOUNTS = {
    "receivable": ("debit", "invoiced, not yet paid or settled with credit"),
    "cash": ("debit", "collected through the payment gateway"),
    "revenue": ("credit", "earned (credit lines for unused time reduce it)"),
    "deferred_revenue": ("credit", "billed for an annual period, earned when that period closes"),
    "billing_credit": ("credit", "the customers' account balance, never cash (R10)"),
    "ai_credit_liability": ("credit", "purchased AI credits not yet used (R23)"),
}
"""Each account's normal side (where its balance usually sits) and what it holds."""


class Journal(ReadModel):
    """v2: each entry reads the policy of the catalog version its fact records (a credit forfeited
    or kept), not the workspace's catalog as loaded now."""

    family = "journal"
    version = 2
    tables = ("journal",)

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {"journal": Table(
            cls.table_name("journal", tag), metadata,
            Column("position", Integer, primary_key=True),
            Column("line_no", Integer, primary_key=True),
            Column("workspace", String(64), nullable=False, index=True),
            Column("occurred_at", UtcDateTime, nullable=False),
            Column("event_type", String(64), nullable=False),
            Column("event_id", String(96), nullable=False),
            Column("account", String(32), nullable=False),
            Column("amount", Amount, nullable=False),
            Column("currency", String(3), nullable=False),
            Column("invoice_id", String(96)),
            Column("memo", Text, nullable=False),
        )}

    KEEP = 5000
    """Workspaces whose balances stay cached between batches (while no other process projects)."""

    def begin(self, session: Session) -> None:
        if not hasattr(self, "balances"):
            self.balances: OrderedDict[str, dict[str, Decimal]] = OrderedDict()
        self.buffer: list[dict[str, Any]] = []

    def finish(self, session: Session) -> None:
        insert_rows(session, self.view.t["journal"], self.buffer)
        while len(self.balances) > self.KEEP:
            self.balances.popitem(last=False)

    def abort(self) -> None:
        self.balances = OrderedDict()

    def note(self, before: Subscription | None, event: Subscription.Event) -> Any:
        return before.ai_purchased if before else 0

    def accounts(self, session: Session, ws: str, event: Subscription.Event) -> dict[str, Decimal]:
        """The workspace's signed balance per account so far (its first event has none)."""
        found = self.balances.get(ws)
        if found is None:
            found = {}
            if event.originator_version > 1:
                table = self.view.t["journal"]
                for account, amount in session.execute(select(table.c.account, table.c.amount)
                                                       .where(table.c.workspace == ws)):
                    found[account] = found.get(account, ZERO) + amount
            self.balances[ws] = found
        self.balances.move_to_end(ws)
        return found

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        purchased_before, sub = self.current.note, self.current.sub
        catalog = self.fold.catalog_of(event, sub)
        ws = sub.workspace_id
        held = self.accounts(session, ws, event)

        def balance(account: str) -> Decimal:
            return held.get(account, ZERO)

        rule = postings.dispatch(type(event))
        if rule is _NO_POSTINGS:
            return
        entry = rule(event, Books(sub, catalog, purchased_before, balance))
        if not entry:
            return
        assert sum((p[1] for p in entry), ZERO) == 0, f"unbalanced entry for {type(event).__name__}: {entry}"
        invoice_id = getattr(event, "invoice_id", None)
        for n, (account, amount, memo) in enumerate(entry, 1):
            held[account] = balance(account) + amount
            self.buffer.append({
                "position": tracking.notification_id, "line_no": n, "workspace": ws, "occurred_at": event.timestamp,
                "event_type": type(event).__name__, "event_id": event_ref(sub, event.originator_version),
                "account": account, "amount": amount, "currency": catalog.currency, "invoice_id": invoice_id,
                "memo": memo})


@dataclass(slots=True)
class Books:
    """What a posting rule reads besides its event: the aggregate after the event, its catalog,
    the purchased AI credits held before it, and the workspace's signed balance per account so far."""

    sub: Subscription
    catalog: Catalog
    purchased_before: int
    balance: Callable[[str], Decimal]


@singledispatch
def postings(event: Subscription.Event, books: Books) -> list[Posting]:
    """The balanced entry for one event. An event class moves money only through a rule
    registered for it (`@postings.register(Subscription.X)`, inherited by its subclasses);
    any other event posts nothing."""
    return []


_NO_POSTINGS = postings.dispatch(object)


@postings.register(Subscription.InvoiceIssued)
def _invoice_issued(event: Subscription.InvoiceIssued, books: Books) -> list[Posting]:
    out: list[Posting] = [
        (_account(line, books.sub), -line["amount"], f"{event.invoice_id}: {line['kind']} {line['description']}")
        for line in event.lines]
    out.append(("receivable", event.subtotal, f"{event.invoice_id} issued ({event.purpose})"))
    _, forfeited = overflow(event.subtotal, books.catalog.policy)
    if forfeited:
        out += [("receivable", forfeited, "credit overflow forfeited (catalog policy)"),
                ("revenue", -forfeited, "credit overflow forfeited (catalog policy)")]
    return out


@postings.register(Subscription.PaymentSucceeded)
def _payment_succeeded(event: Subscription.PaymentSucceeded, books: Books) -> list[Posting]:
    return [("cash", event.amount, f"payment {event.charge_id} on {event.invoice_id}"),
            ("receivable", -event.amount, f"{event.invoice_id} paid")]


@postings.register(Subscription.BillingCreditApplied)
def _billing_credit_applied(event: Subscription.BillingCreditApplied, books: Books) -> list[Posting]:
    return [("billing_credit", event.amount, f"billing credit applied to {event.invoice_id}"),
            ("receivable", -event.amount, f"{event.invoice_id} settled with billing credit")]


@postings.register(Subscription.BillingCreditIssued)
def _billing_credit_issued(event: Subscription.BillingCreditIssued, books: Books) -> list[Posting]:
    source = "receivable" if event.invoice_id else "revenue"
    return [(source, event.amount, f"credit from {event.invoice_id or 'goodwill'}"),
            ("billing_credit", -event.amount, "billing credit issued (never cash, R10)")]


@postings.register(Subscription.AICreditsConsumed)
def _ai_credits_consumed(event: Subscription.AICreditsConsumed, books: Books) -> list[Posting]:
    """Granted credits carry no money; purchased ones release their share of the pack liability."""
    if not event.from_purchased:
        return []
    amount, _ = ai_credit_revenue(-books.balance("ai_credit_liability"), event.from_purchased,
                                  books.purchased_before, books.catalog.currency)
    if not amount:
        return []
    return [("ai_credit_liability", amount, f"{event.from_purchased} purchased AI credits used"),
            ("revenue", -amount, "AI credit packs recognised on use")]


@postings.register(Subscription.PeriodRenewed)
@postings.register(Subscription.SubscriptionCanceled)
def _period_closed(event: Subscription.Event, books: Books) -> list[Posting]:
    """A period ends: what annual billing deferred for it becomes revenue."""
    held = books.balance("deferred_revenue")
    if not held:
        return []
    return [("deferred_revenue", -held, "annual period closed"),
            ("revenue", held, "deferred revenue recognised")]


@postings.register(Subscription.PlanSet)
def _plan_set(event: Subscription.PlanSet, books: Books) -> list[Posting]:
    """A plan set on a new cycle ends the old period early."""
    return _period_closed(event, books) if event.new_cycle else []


def _account(line: dict[str, Any], sub: Subscription) -> str:
    if line["kind"] == "ai_credit_pack":
        return "ai_credit_liability"
    annual = sub.interval == "year" and line["period_end"] is not None and line["period_end"] == sub.period_end
    if line_item(line["kind"]) and annual:
        return "deferred_revenue"
    return "revenue"


def trial_balance(conn: Connection, workspace: str | None = None) -> dict[str, Decimal]:
    """Signed balance per account (debits positive); the values sum to zero."""
    t = Journal.stable()["journal"]
    query = select(t.c.account, t.c.amount)
    if workspace:
        query = query.where(t.c.workspace == workspace)
    totals: dict[str, Decimal] = {}
    for account, amount in conn.execute(query):
        totals[account] = totals.get(account, ZERO) + amount
    return totals


def trial_balances(conn: Connection, workspace: str | None = None,
                   at: datetime | None = None) -> dict[str, dict[str, Decimal]]:
    """Signed balance per currency and account (debits positive) of the postings up to `at`
    (inclusive); each currency's balances sum to zero."""
    t = Journal.stable()["journal"]
    query = select(t.c.currency, t.c.account, t.c.amount)
    if workspace:
        query = query.where(t.c.workspace == workspace)
    if at:
        query = query.where(t.c.occurred_at <= at)
    totals: dict[str, dict[str, Decimal]] = {}
    for currency, account, amount in conn.execute(query):
        accounts = totals.setdefault(currency, {})
        accounts[account] = accounts.get(account, ZERO) + amount
    return totals


def unbalanced_entries(rows: Iterable[tuple[int, Decimal]]) -> list[int]:
    """Positions whose postings do not sum to zero (should always be empty)."""
    sums: dict[int, Decimal] = {}
    for position, amount in rows:
        sums[position] = sums.get(position, ZERO) + amount
    return [p for p, s in sums.items() if s != 0]
