"""Money: an exact Decimal amount with an ISO 4217 currency.

Amounts stay unrounded through a formula and are rounded once, half-up to the
currency's minor unit, when they become an invoice line.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "CHF": 2, "JPY": 0, "KWD": 3}

ZERO = Decimal(0)
MAX_AMOUNT = Decimal("1e12")


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(f"unsupported currency {currency!r}") from None


def round_half_up(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit, half away from zero (so -12.665 -> -12.67)."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def parse_amount(text: str | int | Decimal) -> Decimal:
    """A Decimal from a string or int; floats are refused so no binary fraction leaks in."""
    if isinstance(text, float) or isinstance(text, bool):
        raise ValueError("amounts must be strings or integers, never floats")
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ValueError(f"not an amount: {text!r}") from None
    if not value.is_finite() or abs(value) >= MAX_AMOUNT:
        raise ValueError(f"amount out of range: {text!r}")
    return value


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        minor_units(self.currency)
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money.amount must be a Decimal")

    def rounded(self) -> Money:
        return Money(round_half_up(self.amount, self.currency), self.currency)

    def __str__(self) -> str:
        return f"{round_half_up(self.amount, self.currency)} {self.currency}"


def fmt(amount: Decimal, currency: str) -> str:
    """The amount as the string JSON carries: rounded, fixed point, no exponent."""
    return format(round_half_up(amount, currency), "f")
