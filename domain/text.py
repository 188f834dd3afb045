"""Recorded text shown on one line: a reason, a catalog's name, version or feature. A control or
format character (a line break, a bidi override, U+2028) could make it pass for another line of
output; a lone surrogate cannot even be stored."""

from __future__ import annotations

import unicodedata

UNPRINTABLE = ("Cc", "Cf", "Cs", "Zl", "Zp")
"""Unicode's control, format and surrogate categories, and its line and paragraph separators."""


def plural(count: int, noun: str, *, none: str | None = None) -> str:
    """'1 invoice', '3 invoices'; `none`, when given, for a count of 0 ('no differences')."""
    if count == 0 and none is not None:
        return none
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def unprintable(text: str) -> bool:
    return any(unicodedata.category(c) in UNPRINTABLE for c in text)


def one_line(text: str) -> str:
    """`text` with each control or format character escaped (`\\n`, `\\u202e`)."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) in UNPRINTABLE else c for c in text)
