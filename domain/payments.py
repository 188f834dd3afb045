"""The payment port: how the aggregate collects money without knowing who collects it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ChargeResult:
    ok: bool
    charge_id: str | None = None
    decline_code: str | None = None
    message: str = ""


class PaymentGateway(Protocol):
    def charge(
        self, *, workspace_id: str, payment_method: str, amount: Decimal, currency: str,
        description: str, idempotency_key: str,
    ) -> ChargeResult:
        """Collect `amount` now; the same idempotency key never charges twice."""


class PreviewPayments:
    """Stands in for the gateway during a preview: every charge would succeed, none is made."""

    def charge(self, **kwargs: object) -> ChargeResult:
        return ChargeResult(ok=True, charge_id="preview")


class NoPayments:
    """The gateway of a ledger that was given none: every charge is declined, none is made."""

    def charge(self, **kwargs: object) -> ChargeResult:
        return ChargeResult(ok=False, decline_code="no_gateway", message="no payment gateway is configured")
