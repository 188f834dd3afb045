"""The built-in test payment gateway: Stripe's test payment-method tokens, no network.

A token containing `Declined` or `declined` (`pm_card_chargeDeclined`) is declined as
Stripe's test tokens are (`insufficient_funds` for `...InsufficientFunds`, else
`card_declined`); any other token (`pm_card_visa`) succeeds. A repeated idempotency key
returns the first result and never charges twice.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from domain.payments import ChargeResult


class TestPaymentGateway:
    __test__ = False

    def __init__(self) -> None:
        self.charges: dict[str, ChargeResult] = {}

    def charge(self, *, workspace_id: str, payment_method: str, amount: Decimal, currency: str,
               description: str, idempotency_key: str) -> ChargeResult:
        if idempotency_key in self.charges:
            return self.charges[idempotency_key]
        if "Declined" in payment_method or "declined" in payment_method:
            code = "insufficient_funds" if "InsufficientFunds" in payment_method else "card_declined"
            result = ChargeResult(ok=False, decline_code=code, message="Your card was declined.")
        else:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            result = ChargeResult(ok=True, charge_id=f"ch_test_{digest}")
        self.charges[idempotency_key] = result
        return result
