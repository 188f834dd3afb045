"""Validation errors in plain words, one translator for every adapter (commands, catalog files,
a what-if's policy, the HTTP API): pydantic's own wording names its machinery ("Value error, ...",
"String should match pattern '^...$'", "Extra inputs are not permitted", `prices.week.[key]`),
which a person giving a command or writing a catalog cannot act on."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from domain.text import one_line

PATTERNS: dict[str, str] = {}
"""Each pattern a field must match, in words (`described`)."""
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def described(pattern: str, words: str) -> str:
    """`pattern`, remembered with the rule it is in words: a refused value is told the rule, never the regex."""
    PATTERNS[pattern] = words
    return pattern


def location(loc: Iterable[Any]) -> str:
    """Where in a document, as a reader writes it: `plans[2].prices.month`, an odd key quoted (`['a.b']`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif NAME.fullmatch(part := one_line(str(part))[:40]):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def sentence(error: Mapping[str, Any], within: tuple[Any, ...] = ()) -> str:
    """One pydantic error dict as a sentence, its location first; `within`: where the validated
    document sits (an actor: `("actor",)`)."""
    loc = within + tuple(error.get("loc", ()))
    kind = error.get("type")
    if loc[-1:] == ("[key]",):
        where, key = location(loc[:-2]), loc[-2]
        return f"{where + ': ' if where else ''}the key {one_line(str(key))[:40]!r} {_what(error)}"
    where = location(loc)
    if kind == "missing":
        return f"{where or 'a value'} is required"
    if kind == "extra_forbidden" and loc:
        name, parent = one_line(str(loc[-1]))[:40], location(loc[:-1])
        return f"{name!r} is not a field of {parent}" if parent else f"unknown field {name!r}"
    what = _what(error)
    return f"{where}: {what}" if where else what


def sentences(errors: Iterable[Mapping[str, Any]], within: tuple[Any, ...] = ()) -> list[str]:
    return [sentence(e, within) for e in errors]


def _what(error: Mapping[str, Any]) -> str:
    kind, ctx, msg = error.get("type"), error.get("ctx") or {}, str(error.get("msg", "invalid"))
    if kind == "value_error":
        return str(ctx.get("error") or msg.removeprefix("Value error, "))
    if kind == "assertion_error":
        return msg.removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        words = PATTERNS.get(str(ctx.get("pattern")))
        return f"must be {words}" if words else "is not written in the form it takes"
    if kind in ("too_long", "too_short"):
        most = kind == "too_long"
        n = ctx.get("max_length" if most else "min_length")
        return f"{'at most' if most else 'at least'} {_items(n)} ({ctx.get('actual_length')} given)"
    if kind == "string_too_long":
        given = error.get("input")
        told = f" ({len(given)} given)" if isinstance(given, str) else ""
        return f"at most {ctx.get('max_length')} characters{told}"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"at least {n} characters"
    if kind == "model_type":  # "... or instance of Policy": a class name means nothing to the writer
        return "must be a valid dictionary"
    if msg.startswith("Input should be "):
        return "must be " + msg.removeprefix("Input should be ")
    return msg


def _items(n: Any) -> str:
    return f"{n} item{'' if n == 1 else 's'}"
