"""The built-in test payment gateway: Stripe's test tokens, its idempotency, no network.

Charges live in `test_gateway_charges`, in the ledger's own database (same SQLite file, same
PostgreSQL schema), one row per idempotency key, so every process of a ledger sees the same
charges and a key is charged at most once: a new key is inserted if absent and the stored
row is then read back, whoever inserted it. docs/payments.md, "The test gateway", lists the
tokens and their outcomes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, MetaData, String, Table, Text, select, update
from sqlalchemy.exc import OperationalError

from adapters.side_tables import SideTables, insert_if_absent
from domain.payments import ChargeRequest, ChargeResult, GatewayUnavailable, IdempotencyMismatch
from projections.store import Amount, UtcDateTime

T = TypeVar("T")

DECLINES = {
    "pm_card_chargeDeclined": "card_declined",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
}
ACTION_REQUIRED = {"pm_card_authenticationRequired"}
MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "action_required": "The customer must complete 3-D Secure authentication.",
}
STORED_PLACES = Decimal("0.000001")

metadata = MetaData()
charges_table = Table(
    "test_gateway_charges", metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("amount", Amount),  # NULL (like currency, method) on a key canceled before any charge
    Column("currency", String(16)),
    Column("payment_method", String(255)),
    Column("workspace_id", String(255)),
    Column("description", Text),
    Column("requested_by", String(64)),  # the requesting command's id; NULL on rows from before it
    Column("outcome", String(20), nullable=False),
    Column("decline_code", String(64)),
    Column("charge_id", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


def charge_id(idempotency_key: str) -> str:
    return "ch_test_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def first_outcome(payment_method: str) -> tuple[str, str | None]:
    """(outcome, decline_code) of a first charge with this token, as Stripe's test mode answers."""
    if payment_method in DECLINES:
        return "declined", DECLINES[payment_method]
    if payment_method in ACTION_REQUIRED:
        return "action_required", None
    return "succeeded", None


def shown(value: Any) -> Any:
    """An amount as a person writes it: cents always, more places only where they count."""
    if not isinstance(value, Decimal):
        return value
    cents = value.quantize(Decimal("0.01"))
    return format(cents if cents == value else value.normalize(), "f")


class TestPaymentGateway:
    """A PaymentGateway on the ledger's database URL; the engine is made on first use."""

    __test__ = False
    kind = "test"

    def __init__(self, db_url: str) -> None:
        self.tables = SideTables(db_url, metadata)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        amount = request.amount
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise ValueError(f"a charge is a positive Decimal amount, not {amount!r}")
        if amount != amount.quantize(STORED_PLACES):
            raise ValueError(f"a charge amount has at most 6 decimal places, not {amount}")
        outcome, decline_code = first_outcome(request.payment_method)
        now = datetime.now(timezone.utc)
        row = dict(idempotency_key=request.idempotency_key, amount=amount, currency=request.currency,
                   payment_method=request.payment_method, workspace_id=request.workspace_id,
                   description=request.description, requested_by=request.requested_by, outcome=outcome,
                   decline_code=decline_code,
                   charge_id=None if outcome == "action_required" else charge_id(request.idempotency_key),
                   created_at=now, updated_at=now)

        def insert_then_read(conn: Connection) -> Mapping[str, Any]:
            conn.execute(self._insert_if_absent(conn, row))
            return self._read(conn, request.idempotency_key)

        stored = self._run(insert_then_read)
        if stored["amount"] is not None:  # None: the key was canceled before any charge
            differences = [f"{name} {shown(stored[name])} (now {shown(asked)})" for name, asked in
                           (("amount", amount), ("currency", request.currency),
                            ("payment_method", request.payment_method), ("requested_by", request.requested_by))
                           if stored[name] != asked and not (name == "requested_by" and None in (stored[name], asked))]
            if differences:
                raise IdempotencyMismatch(f"idempotency key {request.idempotency_key!r} was first used "
                                          f"with {', '.join(differences)}")
        return self._result(stored)

    def cancel(self, idempotency_key: str) -> ChargeResult:
        now = datetime.now(timezone.utc)

        def cancel_pending(conn: Connection) -> Mapping[str, Any]:
            conn.execute(self._insert_if_absent(conn, dict(
                idempotency_key=idempotency_key, outcome="canceled", created_at=now, updated_at=now)))
            conn.execute(self._pending(idempotency_key).values(outcome="canceled", updated_at=now))
            return self._read(conn, idempotency_key)

        return self._result(self._run(cancel_pending))

    def confirm(self, idempotency_key: str) -> ChargeResult:
        """Test only: the customer completes 3-D Secure, so a pending charge succeeds."""
        now = datetime.now(timezone.utc)

        def complete(conn: Connection) -> Mapping[str, Any] | None:
            conn.execute(self._pending(idempotency_key).values(
                outcome="succeeded", charge_id=charge_id(idempotency_key), updated_at=now))
            return conn.execute(select(charges_table).where(
                charges_table.c.idempotency_key == idempotency_key)).mappings().one_or_none()

        stored = self._run(complete)
        if stored is None:
            raise KeyError(f"no charge under idempotency key {idempotency_key!r}")
        return self._result(stored)

    def charges(self, workspace_id: str | None = None) -> list[dict[str, Any]]:
        """Every row, oldest first (optionally one workspace's): amounts are Decimals."""
        query = select(charges_table).order_by(charges_table.c.created_at, charges_table.c.idempotency_key)
        if workspace_id is not None:
            query = query.where(charges_table.c.workspace_id == workspace_id)
        return self._run(lambda conn: [dict(row) for row in conn.execute(query).mappings()])

    def total_succeeded(self, workspace_id: str | None = None, currency: str | None = None) -> Decimal:
        """The money actually collected, summed exactly (optionally one workspace, one currency)."""
        return sum((row["amount"] for row in self.charges(workspace_id)
                    if row["outcome"] == "succeeded" and currency in (None, row["currency"])), Decimal(0))

    def close(self) -> None:
        self.tables.close()

    def _run(self, work: Callable[[Connection], T]) -> T:
        try:
            return self.tables.run(work)
        except OperationalError as error:
            raise GatewayUnavailable(f"the test gateway's database is unreachable: {error.orig}") from error

    @staticmethod
    def _insert_if_absent(conn: Connection, row: dict[str, Any]) -> Any:
        return insert_if_absent(conn, charges_table, row)

    @staticmethod
    def _pending(idempotency_key: str) -> Any:
        return update(charges_table).where(charges_table.c.idempotency_key == idempotency_key,
                                           charges_table.c.outcome == "action_required")

    @staticmethod
    def _read(conn: Connection, idempotency_key: str) -> Mapping[str, Any]:
        return conn.execute(select(charges_table).where(
            charges_table.c.idempotency_key == idempotency_key)).mappings().one()

    @staticmethod
    def _result(row: Mapping[str, Any]) -> ChargeResult:
        message = MESSAGES.get(row["decline_code"] or row["outcome"], "")
        return ChargeResult(row["outcome"], charge_id=row["charge_id"], decline_code=row["decline_code"],
                            message=message)
