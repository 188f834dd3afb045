"""upcoming_invoice: the invoice each workspace will be issued at its period end, with its lines:
the renewal, or the final invoice of a cancellation or a move to a free plan (operations billed
as overage, R19).

It is not priced here: the aggregate, copied, runs what falls due at its period end with
the clock pinned there and a payment port that charges nothing (the preview path of
R25), and the invoice it would issue is stored. Scheduled downgrades,
cancellations, trial ends, seats, add-ons and billing credit therefore move the forecast
exactly as they will move the real invoice.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.catalog import Catalog
from domain.commands import SYSTEM
from domain.errors import LedgerError
from domain.subscription import Context, Subscription, scheduler
from projections.readmodel import LatestPerWorkspace
from projections.store import Amount, UtcDateTime, document, insert_rows, line_columns, line_row


class UpcomingInvoice(LatestPerWorkspace):
    """v2: the tier, the seats and a line's quantity are 64-bit, as in plan_state v2. v3: a final
    invoice is forecast too (`purpose`), and `seats` is the plan's count on a flat plan, as `show` says."""

    family = "upcoming_invoice"
    version = 3
    tables = ("upcoming_invoice", "upcoming_invoice_lines")

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {
            "upcoming_invoice": Table(
                cls.table_name("upcoming_invoice", tag), metadata,
                Column("workspace", String(64), primary_key=True),
                Column("due_at", UtcDateTime, nullable=False),
                Column("purpose", String(16), nullable=False),
                Column("plan", String(64)),
                Column("tier", BigInteger),
                Column("interval", String(8)),
                Column("seats", BigInteger),
                Column("currency", String(3), nullable=False),
                Column("subtotal", Amount, nullable=False),
                Column("credit_applied", Amount, nullable=False),
                Column("amount_due", Amount, nullable=False),
                Column("position", Integer, nullable=False),
                Column("updated_at", UtcDateTime, nullable=False),
            ),
            "upcoming_invoice_lines": Table(
                cls.table_name("upcoming_invoice_lines", tag), metadata,
                Column("workspace", String(64), primary_key=True),
                Column("line_no", Integer, primary_key=True),
                *line_columns(),
            ),
        }

    def finish(self, session: Session) -> None:
        head, lines = self.view.t["upcoming_invoice"], self.view.t["upcoming_invoice_lines"]
        touched = list(self.latest)
        if not touched:
            return
        session.execute(delete(lines).where(lines.c.workspace.in_(touched)))
        session.execute(delete(head).where(head.c.workspace.in_(touched)))
        heads, items = [], []
        for ws, (sub, tracking, event) in self.latest.items():
            catalog = self.fold.catalog(sub)
            forecast = period_end_invoice(sub, catalog)
            if forecast is None:
                continue
            renewed, invoice = forecast
            heads.append({
                "workspace": ws, "due_at": invoice.timestamp, "purpose": invoice.purpose, "plan": renewed.plan,
                "tier": renewed.tier, "interval": renewed.interval, "seats": renewed.seat_limit(catalog),
                "currency": invoice.currency,
                "subtotal": invoice.subtotal, "credit_applied": invoice.credit_applied,
                "amount_due": invoice.amount_due, "position": tracking.notification_id, "updated_at": event.timestamp,
            })
            items += [line_row(line, workspace=ws, line_no=n) for n, line in enumerate(invoice.lines, 1)]
        insert_rows(session, head, heads)
        insert_rows(session, lines, items)


PERIOD_END_PURPOSES = ("renewal", "final")


def period_end_invoice(sub: Subscription, catalog: Catalog) -> tuple[Subscription, Subscription.InvoiceIssued] | None:
    """(the aggregate whose plan it bills, the invoice) issued at the current period's end: the
    renewal (the aggregate as renewed), or the final invoice of what is still owed when billing
    ends there (R19; the aggregate as it ends); None when nothing
    will be billed then (free plan, trial ending, a cancellation with nothing owed, no period).
    A period end that waits for a retry (a late scheduler's, domain/subscription/dunning.py)
    comes once that retry is paid, as a forecast assumes it is."""
    if not sub.subscribed or sub.period_end is None:
        return None
    future = copy.deepcopy(sub)
    retry = scheduler.first_retry(sub)
    ctx = Context(SYSTEM, "scheduler", max(sub.period_end, retry[0]) if retry else sub.period_end, catalog, "forecast")
    try:
        future.process_due(ctx, forecast=True)
    except LedgerError:
        return None
    for e in future.collect_events():
        if isinstance(e, Subscription.InvoiceIssued) and e.purpose in PERIOD_END_PURPOSES:
            return (sub if e.purpose == "final" else future), e
    return None


def upcoming_of(conn: Connection, workspace: str) -> dict[str, Any] | None:
    t = UpcomingInvoice.stable()
    head = conn.execute(select(t["upcoming_invoice"]).where(t["upcoming_invoice"].c.workspace == workspace)).mappings().first()
    if head is None:
        return None
    lines = conn.execute(select(t["upcoming_invoice_lines"]).where(t["upcoming_invoice_lines"].c.workspace == workspace)
                         .order_by(t["upcoming_invoice_lines"].c.line_no)).mappings().all()
    currency = head["currency"]
    return document(head) | {"lines": [document(x, currency) for x in lines]}
