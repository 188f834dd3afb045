"""JSON from outside (a request body, a scenario file), read with bounded numbers: no count the
ledger takes has more than a few digits, and Python's own refusal of a number of thousands of
digits is a ValueError whose message advises a developer, not the sender. A key given twice in
one object is refused, not read as its last value."""

from __future__ import annotations

import json
from typing import Any

MAX_DIGITS = 40


def whole_number(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ValueError(f"a number of {digits} digits (no number here has more than {MAX_DIGITS})")
    return int(text)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with one given twice, `{"members": 2, "members": 7}`,
    a proxy or validator reading the first would pass what the ledger, reading the last, records."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key[:40]!r} is given twice in one object: send each key once")
        found[key] = value
    return found


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing (ValueError) a whole number of more than MAX_DIGITS digits and an
    object that gives a key twice."""
    return json.loads(text, parse_int=whole_number, object_pairs_hook=unique_keys)
