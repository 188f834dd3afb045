"""The built-in test payment gateway: Stripe's test payment-method tokens, no network.

`pm_card_visa` (and any other `pm_card_*` token) succeeds; a token containing
`chargeDeclined` or `Declined` is declined, as Stripe's test tokens are.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from domain.payments import ChargeResult


class TestPaymentGateway:
    __test__ = False

    def __init__(self) -> None:
        self.charges: dict[str, ChargeResult] = {}
        self.amounts: dict[str, Decimal] = {}

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
            self.amounts[idempotency_key] = amount
        self.charges[idempotency_key] = result
        return result
