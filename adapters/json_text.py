"""JSON from outside (a request body, a scenario file), read with bounded numbers: no count the
ledger takes has more than a few digits, and Python's own refusal of a number of thousands of
digits is a ValueError whose message advises a developer, not the sender."""

from __future__ import annotations

import json
from typing import Any

MAX_DIGITS = 40


def whole_number(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ValueError(f"a number of {digits} digits (no number here has more than {MAX_DIGITS})")
    return int(text)


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing (ValueError) a whole number of more than MAX_DIGITS digits."""
    return json.loads(text, parse_int=whole_number)
