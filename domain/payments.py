"""The payment port: how the application collects money; the aggregate never calls it.

Money moves only after the decision is durable (docs/payments.md): the aggregate records a
pending charge whose key is never reused for anything else; the application then calls
`charge` with that key and records the outcome. A gateway is idempotent per key, as Stripe
is: the same key with the same request returns the first outcome and never charges twice;
the same key with another amount, currency, payment method or requesting command raises
IdempotencyMismatch.
So a retry, a second process or a recovery after a crash may always ask again with the key.

A provider that does not honour the key (a local test stand-in may not) is safe through the two-step
`SubmittingGateway`: `submit` creates the provider's charge object without moving money, the
ledger records its reference (ChargeSubmitted), and only then `charge(request, reference)`
confirms that object; asking again reads it by its reference and never makes another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Literal, Protocol

Outcome = Literal["succeeded", "declined", "action_required", "canceled"]
CANCELED = "canceled"
"""The outcome, and the decline code recorded (domain/subscription/billing.py), of a charge that
was canceled rather than declined: abandoned while it waited for the customer's 3-D Secure, or
canceled by the provider. No bank said no."""
ACTION_WINDOW = timedelta(hours=23)
"""How long a charge waits for the customer's 3-D Secure before it is abandoned (R12), as Stripe
expires a subscription whose first payment is still incomplete: a purchase never lands days
after it was priced, and a renewal's failure is known the next day and dunned (R8)."""


def ending(decline_code: str | None, otherwise: str) -> str:
    """How a charge that did not succeed ended, from its recorded decline code: CANCELED when no
    bank said no, else `otherwise` (`declined`, or `failed` for an issued invoice's payment)."""
    return CANCELED if decline_code == CANCELED else otherwise


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    workspace_id: str
    payment_method: str
    amount: Decimal
    currency: str
    description: str
    requested_by: str | None = None
    """The command that recorded the charge request: a key asked again for another command (a
    state that forgot the invoice, a bug) is refused (IdempotencyMismatch), never answered with
    the first command's payment. None for requests recorded before commands had ids."""


@dataclass(frozen=True)
class ChargeResult:
    """A charge's outcome. `action_required` (3-D Secure) stays pending until the customer
    confirms it (then `succeeded`) or it is abandoned (`canceled`)."""

    outcome: Outcome
    charge_id: str | None = None
    decline_code: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "succeeded"

    @property
    def final(self) -> bool:
        return self.outcome != "action_required"


class IdempotencyMismatch(Exception):
    """The key was used before with another amount, currency, payment method or command: a bug or
    a tampered state, never retried; the charge stays pending for a person to look at."""


class GatewayUnavailable(Exception):
    """The provider did not answer: the outcome is unknown and the charge stays pending."""


class PaymentGateway(Protocol):
    kind: str
    """`test`, or the provider's name: recorded in the ledger with its first write (domain/writers.py)."""

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Collect `request.amount` now, once per key (see the module docstring)."""

    def cancel(self, idempotency_key: str) -> ChargeResult:
        """Abandon a charge still awaiting the customer's action. Returns the final outcome:
        `canceled`, or `succeeded`/`declined` if it completed first; an unknown key is `canceled`
        (nothing can be collected under it any more)."""


class SubmittingGateway(PaymentGateway, Protocol):
    """A gateway whose charge is two steps: create, then confirm (Stripe's PaymentIntents)."""

    def submit(self, request: ChargeRequest) -> str | None:
        """Create the provider's unconfirmed charge object for `request` and return its reference,
        or None when none was made (the card was refused before: `charge(request)` says so)."""

    def charge(self, request: ChargeRequest, reference: str | None = None) -> ChargeResult:  # type: ignore[override]
        """Confirm the object `reference` names (once) or read its outcome; without a reference,
        create and confirm in one step, trusting the provider's idempotency key."""

    def cancel(self, idempotency_key: str, reference: str | None = None) -> ChargeResult:  # type: ignore[override]
        """Cancel the object `reference` names (found by key without one), unless it completed."""


class NoPayments:
    """The gateway of a ledger that was given none: every charge is declined, none is made."""

    kind = "none"

    def charge(self, request: ChargeRequest) -> ChargeResult:
        return ChargeResult("declined", decline_code="no_gateway", message="no payment gateway is configured")

    def cancel(self, idempotency_key: str) -> ChargeResult:
        return ChargeResult("canceled")
