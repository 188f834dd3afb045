"""invoices, invoice_lines and invoice_payments: every issued invoice, line by line, with
the events that produced it and every payment and failed payment against it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import singledispatchmethod
from types import SimpleNamespace
from typing import Any

from eventsourcing.persistence import Tracking
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.money import ZERO
from domain.payments import ending
from domain.pricing import overflow
from domain.subscription import Subscription
from projections.commands_trail import charge_request, preceding
from projections.readmodel import ReadModel, event_ref
from projections.store import Amount, UtcDateTime, document, dumps, insert_rows, line_columns, line_row


class Invoices(ReadModel):
    """v4: a charge abandoned at 3-D Secure (a purchase's, a renewal's or a retry's) is a payment
    with outcome `canceled`, no longer `declined` or `failed`. v5: a line's quantity is 64-bit
    (operations billed can outgrow 32 bits). v6: what a bill's credit beyond it became
    (`credit_issued` as billing credit, or `credit_forfeited` under the catalog's policy, R27)."""

    family = "invoices"
    version = 6
    tables = ("invoices", "invoice_lines", "invoice_payments")

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {
            "invoices": Table(
                cls.table_name("invoices", tag), metadata,
                Column("invoice_id", String(96), primary_key=True),
                Column("workspace", String(64), nullable=False, index=True),
                Column("purpose", String(32), nullable=False),
                Column("issued_at", UtcDateTime, nullable=False),
                Column("currency", String(3), nullable=False),
                Column("subtotal", Amount, nullable=False),
                Column("credit_applied", Amount, nullable=False),
                Column("amount_due", Amount, nullable=False),
                Column("credit_issued", Amount, nullable=False),
                Column("credit_forfeited", Amount, nullable=False),
                Column("amount_paid", Amount, nullable=False),
                Column("status", String(16), nullable=False),
                Column("paid_at", UtcDateTime),
                Column("failures", Integer, nullable=False),
                Column("last_failure_code", String(64)),
                Column("last_failure_at", UtcDateTime),
                Column("period_start", UtcDateTime),
                Column("period_end", UtcDateTime),
                Column("event_id", String(96), nullable=False),
                Column("source_event_ids", Text, nullable=False),
                Column("position", Integer, nullable=False),
            ),
            "invoice_lines": Table(
                cls.table_name("invoice_lines", tag), metadata,
                Column("invoice_id", String(96), primary_key=True),
                Column("line_no", Integer, primary_key=True),
                Column("workspace", String(64), nullable=False, index=True),
                *line_columns(),
                Column("currency", String(3), nullable=False),
                Column("source_event_ids", Text, nullable=False),
            ),
            "invoice_payments": Table(
                cls.table_name("invoice_payments", tag), metadata,
                Column("position", Integer, primary_key=True),
                Column("invoice_id", String(96), nullable=False, index=True),
                Column("workspace", String(64), nullable=False),
                Column("at", UtcDateTime, nullable=False),
                Column("outcome", String(16), nullable=False),
                Column("amount", Amount, nullable=False),
                Column("charge_id", String(96)),
                Column("payment_method", String(96)),
                Column("decline_code", String(64)),
                Column("message", Text),
                Column("event_id", String(96), nullable=False),
            ),
        }

    def begin(self, session: Session) -> None:
        self.buffer: dict[str, list[dict[str, Any]]] = {"invoices": [], "invoice_lines": [], "invoice_payments": []}
        self.pending: dict[str, dict[str, Any]] = {}  # invoices of this batch, not yet written

    def finish(self, session: Session) -> None:
        for name, rows in self.buffer.items():
            insert_rows(session, self.view.t[name], rows)
            rows.clear()
        self.pending.clear()

    def project(self, session: Session, event: Subscription.Event, tracking: Tracking) -> None:
        # the dispatcher itself: `self.record` rebuilds a bound wrapper at every access
        _RECORD.dispatch(type(event))(self, event, session, self.current.sub, tracking)

    @singledispatchmethod
    def record(self, event: Subscription.Event, session: Session, sub: Subscription, tracking: Tracking) -> None:
        """Write what the event changes in the invoice tables: the method registered for its
        class (`@record.register(Subscription.X)`, inherited by its subclasses), else nothing."""

    @record.register(Subscription.InvoiceIssued)
    def _issued(self, event: Subscription.InvoiceIssued, session: Session, sub: Subscription,
                tracking: Tracking) -> None:
        ws = sub.workspace_id
        event_id = event_ref(ws, event.originator_version)
        group = preceding(self.fold.source, event, self.fold.seen.get(event.originator_id))
        source_ids = dumps([*(event_ref(ws, e.originator_version) for e in group), event_id])
        credit = overflow(event.subtotal, self.fold.catalog_of(event, sub).policy)
        self._add_invoice(event, ws, event_id, source_ids, tracking, credit=credit)

    @record.register(Subscription.ChargeDeclined)
    def _declined(self, event: Subscription.ChargeDeclined, session: Session, sub: Subscription,
                  tracking: Tracking) -> None:
        """A declined purchase never issued its invoice: it is shown void, with the lines, amount and
        request time its charge request held (R12)."""
        held = charge_request(self.fold.source, event, self.fold.seen.get(event.originator_id))
        issued = next((e for e in held.effects if e["type"] == "InvoiceIssued"), None) if held else None
        if issued is None:
            return
        ws = sub.workspace_id
        event_id = event_ref(ws, event.originator_version)
        invoice = SimpleNamespace(**issued["fields"])
        source_ids = dumps([event_ref(ws, held.originator_version), event_id])
        self._add_invoice(invoice, ws, event_id, source_ids, tracking, status="void")
        self.pending[invoice.invoice_id].update(failures=1, last_failure_code=event.decline_code,
                                                last_failure_at=event.timestamp)
        self._payment(event, sub, tracking, outcome=ending(event.decline_code, "declined"), charge_id=None,
                      payment_method=held.payment_method,
                      decline_code=event.decline_code, message=event.message)

    def _add_invoice(self, event: Any, ws: str, event_id: str, source_ids: str, tracking: Tracking,
                     credit: tuple[Decimal, Decimal] = (ZERO, ZERO), status: str | None = None) -> None:
        starts = [line["period_start"] for line in event.lines if line["period_start"]]
        ends = [line["period_end"] for line in event.lines if line["period_end"]]
        self.pending[event.invoice_id] = dict(
            invoice_id=event.invoice_id, workspace=ws, purpose=event.purpose, issued_at=event.timestamp,
            currency=event.currency, subtotal=event.subtotal, credit_applied=event.credit_applied,
            amount_due=event.amount_due, credit_issued=credit[0], credit_forfeited=credit[1], amount_paid=0,
            status=status or ("open" if event.amount_due > 0 else "paid"),
            paid_at=None if event.amount_due > 0 or status else event.timestamp, failures=0, last_failure_code=None,
            last_failure_at=None, period_start=min(starts) if starts else None,
            period_end=max(ends) if ends else None, event_id=event_id,
            source_event_ids=source_ids, position=tracking.notification_id,
        )
        self.buffer["invoices"].append(self.pending[event.invoice_id])
        self.buffer["invoice_lines"].extend(
            line_row(line, invoice_id=event.invoice_id, line_no=n, workspace=ws, currency=event.currency,
                     source_event_ids=source_ids)
            for n, line in enumerate(event.lines, 1)
        )

    @record.register(Subscription.PaymentSucceeded)
    def _paid(self, event: Subscription.PaymentSucceeded, session: Session, sub: Subscription,
              tracking: Tracking) -> None:
        self._payment(event, sub, tracking, outcome="succeeded", charge_id=event.charge_id,
                      payment_method=event.payment_method, decline_code=None, message=None)
        self._change_invoice(session, event.invoice_id, lambda inv: {
            "amount_paid": inv["amount_paid"] + event.amount, "status": "paid", "paid_at": event.timestamp})

    @record.register(Subscription.PaymentFailed)
    def _payment_failed(self, event: Subscription.PaymentFailed, session: Session, sub: Subscription,
                        tracking: Tracking) -> None:
        self._payment(event, sub, tracking, outcome=ending(event.decline_code, "failed"), charge_id=None,
                      payment_method=None, decline_code=event.decline_code, message=event.message)
        self._change_invoice(session, event.invoice_id, lambda inv: {
            "failures": inv["failures"] + 1, "status": "open", "last_failure_code": event.decline_code,
            "last_failure_at": event.timestamp})

    def _payment(self, event: Any, sub: Subscription, tracking: Tracking, **outcome: Any) -> None:
        """One row of invoice_payments: an attempt to collect an invoice and how it went."""
        self.buffer["invoice_payments"].append(dict(
            position=tracking.notification_id, invoice_id=event.invoice_id, workspace=sub.workspace_id,
            at=event.timestamp, amount=event.amount, event_id=event_ref(sub, event.originator_version), **outcome,
        ))

    def _change_invoice(self, session: Session, invoice_id: str,
                        change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Update an invoice row with `change(its amount_paid and failures so far)`: in the buffer
        when this batch issued it, else in its table."""
        inv = self.view.t["invoices"]
        pending = self.pending.get(invoice_id)
        if pending is not None:
            pending.update(change(pending))
            return
        found = session.execute(select(inv.c.amount_paid, inv.c.failures)
                                .where(inv.c.invoice_id == invoice_id)).mappings().one()
        session.execute(update(inv).where(inv.c.invoice_id == invoice_id).values(**change(dict(found))))


_RECORD = Invoices.__dict__["record"].dispatcher


def invoices_of(conn: Connection, workspace: str) -> list[dict[str, Any]]:
    """A workspace's invoices with their lines and payments, oldest first, amounts as strings."""
    t = Invoices.stable()
    invoices = conn.execute(select(t["invoices"]).where(t["invoices"].c.workspace == workspace)
                            .order_by(t["invoices"].c.position)).mappings().all()
    lines = conn.execute(select(t["invoice_lines"]).where(t["invoice_lines"].c.workspace == workspace)
                         .order_by(t["invoice_lines"].c.invoice_id, t["invoice_lines"].c.line_no)).mappings().all()
    payments = conn.execute(select(t["invoice_payments"]).where(t["invoice_payments"].c.workspace == workspace)
                            .order_by(t["invoice_payments"].c.position)).mappings().all()
    out = []
    for inv in invoices:
        doc = document(dict(inv))
        doc["lines"] = [document(dict(x)) for x in lines if x["invoice_id"] == inv["invoice_id"]]
        doc["payments"] = [document(dict(x), inv["currency"]) for x in payments if x["invoice_id"] == inv["invoice_id"]]
        out.append(doc)
    return out
