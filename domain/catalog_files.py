"""What a catalog file may set beyond the model's own rules: checked when a file is read
(domain/catalog.py parse_catalog, and a what-if's policy overrides), never on a catalog already
published in a ledger, which is read back as it was recorded and must keep billing.

A file is at most MAX_FILE_BYTES; its counts and spans of days are bounded (MAX_COUNT, MAX_DAYS)
so that any sum or product stays inside the read models' 64-bit columns and a date; prices are
written in plain digits; every field a plan sets applies to its kind; its text is one printable
line of at most MAX_TEXT characters, so a catalog name, version or feature can never break a line
of output or reorder it (bidi controls)."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from domain.money import MAX_AMOUNT, MINOR_UNITS
from domain.plain_errors import location
from domain.text import one_line, unprintable

if TYPE_CHECKING:
    from domain.catalog import Catalog

MAX_FILE_BYTES = 1 << 20
MAX_COUNT = 10**9
"""The largest count (seats, gigabytes, credits, operations, rank) a catalog file may set: any sum
or product of a few of them stays far inside the read models' 64-bit columns."""
MAX_DAYS = 3660
"""The longest span in days (a trial, a carry-over) a catalog file may set: ten years, far inside
what a date can hold."""
MAX_TEXT = 200
MAX_DEPTH = 8
"""The deepest a file's tables and arrays may nest: a catalog needs five (a tier's table in a plan's
list of tiers, in the file's list of plans), and the checks after reading it recurse."""
CLEARS = "none"
"""A command's word for null where a field may be cleared (`set-storage-addon --addon none`),
so no add-on in a catalog file may carry it as its id."""


def nested_too_deeply(data: Any) -> bool:
    """Whether tables or arrays nest deeper than MAX_DEPTH, found level by level without recursion:
    TOML reads a thousand dotted table names (`[a.a.a...]`) without recursing, and they nest a
    thousand deep."""
    level = [data]
    for _ in range(MAX_DEPTH + 1):
        level = [child for node in level for child in _inside(node)]
        if not level:
            return False
    return True


def _inside(node: Any) -> Any:
    return node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()


def texts(node: Any, path: tuple[Any, ...] = ()) -> Any:
    """Every text of a parsed file, a value or a key, as (where, text, is it a key); where is a path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,), key, True
            yield from texts(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from texts(value, path + (i,))
    elif isinstance(node, str):
        yield path, node, False


PLAIN_PRICE = re.compile(r"[0-9]+(\.[0-9]+)?")


def prices_not_plain(data: Any, *, loaded_before: bool) -> Any:
    """Every price a file writes other than as plain digits in quotes ("12.00"), with how to write it:
    "1e3" billed 1000.00 as 1E+3, and "+12.00", " 12.00 ", "1_2.00" and 12 all billed 12.00, where
    a person reading the file, and the invoice, must see the amount as written. `loaded_before`:
    those an earlier release accepted (a finite amount without an exponent), or the others."""
    currency = data.get("currency") if isinstance(data, dict) else None
    for where, value in _leaves(data):
        if where[-1:] == ("price",) or where[-2:-1] == ("prices",):
            if not (isinstance(value, str) and PLAIN_PRICE.fullmatch(value)) and _accepted_before(value) == loaded_before:
                yield f"{location(where)} = {_written(value)}: {_how(value, MINOR_UNITS.get(str(currency)))}"


def _accepted_before(value: Any) -> bool:
    if not isinstance(value, (int, float, str)) or (isinstance(value, str) and "e" in value.lower()):
        return False
    amount = _amount(value)
    return amount is not None and amount.is_finite()


def _amount(value: Any) -> Decimal | None:
    """The amount a price as written reads as (a float as it prints), or None."""
    if isinstance(value, bool):
        return None
    written = repr(value) if isinstance(value, float) else value.strip() if isinstance(value, str) else value
    try:
        return Decimal(written)
    except (InvalidOperation, TypeError, ValueError):
        return None


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Any:
    if isinstance(node, (dict, list)):
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            yield from _leaves(value, path + (key,))
    else:
        yield path, node


def _written(value: Any) -> str:
    """The value as the file wrote it, quoted if text (" 12.00 "), escaped to one line."""
    return one_line(json.dumps(value[:40] if isinstance(value, str) else value, ensure_ascii=False, default=str))


def _how(value: Any, places: int | None) -> str:
    """How to write `value` as a price: the same amount in plain digits, to the currency's minor unit."""
    amount = _amount(value)
    if amount is None or not amount.is_finite() or amount >= MAX_AMOUNT:
        return 'a price is plain digits 0-9 in quotes, e.g. "12.00"'
    if amount <= 0:
        return 'a price is a positive amount in plain digits, e.g. "12.00"'
    why = "a float cannot hold cents exactly" if isinstance(value, float) else "a price is plain digits 0-9 in quotes"
    shown = f"{amount:.{places}f}" if places is not None and amount == round(amount, places) else f"{amount:f}"
    return f'{why}; write "{shown}"'


def unprintable_texts(data: Any) -> Any:
    """Every text (or key) of a parsed file that is too long or holds a control or format character."""
    for where, text, key in texts(data):
        yield from _text_problem(f"{location(where)}{' (key)' if key else ''}", text)


def _text_problem(where: str, text: str) -> Any:
    if len(text) > MAX_TEXT:
        yield f"{where}: {len(text):,} characters, at most {MAX_TEXT}"
    elif unprintable(text):
        yield f"{where} = {one_line(text)[:60]!r}: control or formatting characters"


def bounded(catalog: Catalog) -> list[str]:
    """Every count and span of days out of its bounds, an add-on named CLEARS, and a trial that
    would not end on a free plan (R15: a paid or contract plan without its price or contract
    would bill nothing and never end)."""
    found = [f"{where} = {value}: {'at least 0, ' if value < 0 else ''}at most {limit}"
             for where, value, limit in _limits(catalog) if not 0 <= value <= limit]
    found += [f"addons[{i}].id = {addon.id}: an add-on may not be called {CLEARS!r}, which set-storage-addon reads "
              "as removing the add-on" for i, addon in enumerate(catalog.addons) if addon.id == CLEARS]
    landing = catalog.trial_fallback()
    if any(p.kind == "trial" for p in catalog.plans) and (landing is None or landing.kind != "free"):
        found.append(f"policy.trial_fallback = {landing.id}: a {landing.kind} plan; an unconverted trial falls back "
                     "to a free plan (R15)" if landing else "plans: a trial and no free plan for it to fall back to "
                     "(R15); add one or set policy.trial_fallback")
    return found


UNBILLED = (("prices", "its prices would never be charged"), ("tiers", "its tiers would never be charged"),
            ("per_seat", "it would never sell a seat"),
            ("ai_credits_per_seat", "its AI credits would never be granted"))
"""Plan fields only a paid plan applies (domain/pricing.py plan_item, ai_grant_entitlement)."""


def never_applied(catalog: Catalog) -> list[str]:
    """What a plan sets that its kind never applies (prices on a free plan, per_seat on a trial,
    max_seats on a flat plan), a blank name and a feature listed twice: `catalog check` showed a free
    plan's prices as if it billed them, and a typo must never silently change billing."""
    found = []
    for i, plan in enumerate(catalog.plans):
        at, kind = f"plans[{i}]", f"{plan.kind} plan {plan.id!r}"
        if not plan.billable:
            found += [f"{at}.{field}: {kind} bills nothing, so {what}; remove it, or make it a paid plan"
                      for field, what in UNBILLED if getattr(plan, field)]
        if plan.kind != "trial" and plan.trial_days is not None:
            found.append(f"{at}.trial_days: {kind} is not a trial, so its trial_days would never apply")
        if not plan.per_seat and "max_seats" in plan.model_fields_set:
            found.append(f"{at}.max_seats: plan {plan.id!r} is not billed per seat, so max_seats would never apply "
                         "(seats is a flat plan's limit)")
        if plan.per_seat and plan.seats is not None:
            found.append(f"{at}.seats: plan {plan.id!r} is billed per seat, so seats would never apply (max_seats is "
                         "the most it sells)")
        if not plan.name.strip():
            found.append(f"{at}.name: plan {plan.id!r} has no name, which invoices and summaries show")
        twice = sorted({f for f in plan.features if plan.features.count(f) > 1})
        if twice:
            found.append(f"{at}.features: plan {plan.id!r} lists {', '.join(twice)} twice")
    named = [("name", catalog.name)] + [(f"addons[{i}].name", a.name) for i, a in enumerate(catalog.addons)] \
        + [(f"credit_packs[{i}].name", c.name) for i, c in enumerate(catalog.credit_packs)]
    found += [f"{where}: blank, and it is what invoices and summaries show"
              for where, name in named if not name.strip()]
    return found


def _limits(catalog: Catalog) -> Any:
    policy = catalog.policy
    yield "policy.operations_pack", policy.operations_pack, MAX_COUNT
    for interval, days in policy.carry_over_days.items():
        yield f"policy.carry_over_days.{interval}", days, MAX_DAYS
    for i, plan in enumerate(catalog.plans):
        for name in ("rank", "seats", "max_seats", "storage_gb", "ai_credits_per_seat", "teams"):
            yield f"plans[{i}].{name}", getattr(plan, name) or 0, MAX_COUNT
        yield f"plans[{i}].trial_days", plan.trial_days or 0, MAX_DAYS
        for interval, price in plan.prices.items():  # the largest renewal it can bill: its seats and an add-on
            dearest = max((a.prices.get(interval, 0) for a in catalog.addons), default=0)
            seats = plan.max_seats if plan.per_seat else 1
            yield (f"plans[{i}].prices.{interval}{' x max_seats' if plan.per_seat else ''} + the dearest add-on",
                   price * seats + dearest, MAX_AMOUNT - 1)
        for j, tier in enumerate(plan.tiers):
            yield f"plans[{i}].tiers[{j}].operations", tier.operations, MAX_COUNT
            dearest = max((a.prices.get(tier.interval, 0) for a in catalog.addons), default=0)
            yield f"plans[{i}].tiers[{j}].price + the dearest add-on", tier.price + dearest, MAX_AMOUNT - 1
    for i, addon in enumerate(catalog.addons):
        yield f"addons[{i}].storage_gb", addon.storage_gb, MAX_COUNT
    for i, pack in enumerate(catalog.credit_packs):
        yield f"credit_packs[{i}].credits", pack.credits, MAX_COUNT
