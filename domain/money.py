"""Money: exact Decimal amounts in an ISO 4217 currency (the catalog's), never floats.

Amounts stay unrounded through a formula and are rounded once, half-up to the
currency's minor unit, when they become an invoice line.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "CHF": 2, "JPY": 0, "KWD": 3}

ZERO = Decimal(0)
MAX_AMOUNT = Decimal("1e12")


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(f"unsupported currency {currency!r}") from None


QUANTUM = {currency: Decimal(1).scaleb(-places) for currency, places in MINOR_UNITS.items()}
"""Each currency's minor unit as a Decimal (0.01 for USD)."""


def round_half_up(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit, half away from zero (so -12.665 -> -12.67)."""
    quantum = QUANTUM.get(currency)
    if quantum is None:
        quantum = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


def parse_amount(text: object) -> Decimal:
    """A Decimal from a string or int; floats are refused so no binary fraction leaks in."""
    if isinstance(text, (float, bool)):
        raise ValueError(f"write amounts as strings (\"{text}\"), never floats: a float cannot hold cents exactly")
    if not isinstance(text, (str, int, Decimal)):
        raise ValueError(f"not an amount: {text!r}")
    if isinstance(text, str) and not text.isascii():
        raise ValueError(f"not an amount: {text[:20]!r} (write it with the digits 0-9)")
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ValueError(f"not an amount: {text!r}") from None
    if not value.is_finite() or abs(value) >= MAX_AMOUNT:
        raise ValueError(f"amount out of range: {text!r}")
    return value


def fmt(amount: Decimal, currency: str) -> str:
    """The amount as the string JSON carries: rounded, fixed point, no exponent."""
    return format(round_half_up(amount, currency), "f")
