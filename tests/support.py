"""Helpers shared by the rule tests: set-ups that read like the rules, and exact assertions."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from domain.ledger import Result
from projections.views import event_types, plan_state
from tests.conftest import ADMIN

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeDeclined"


def D(text: str) -> Decimal:
    return Decimal(text)


def types(result: Result) -> list[str]:
    return event_types(result.events)


def only_invoice(result: Result) -> Any:
    (invoice,) = result.invoices()
    return invoice


def lines(invoice: Any) -> list[tuple[str, Decimal]]:
    return [(line["kind"], line["amount"]) for line in invoice.lines]


def version(b: Any, ws: str) -> int | None:
    sub = b.sub(ws)
    return sub.version if sub else None


def refused(b: Any, ws: str, code: str, command: str, actor: Any = ADMIN, **args: Any) -> Result:
    """The command is refused with `code` and records nothing (the aggregate version is unchanged)."""
    before = version(b, ws)
    result = b.do(ws, command, actor=actor, **args)
    assert not result.ok, f"{command} {args} was accepted"
    assert result.error.code == code, result.error
    assert result.events == []
    assert version(b, ws) == before
    return result


def state(b: Any, ws: str) -> dict[str, Any]:
    sub = b.sub(ws)
    return plan_state(sub, b.ledger.catalog_for(sub))


def forms_on(book: Any, plan: str = "pro", interval: str = "month", start: str = "2026-04-01T00:00:00",
             ws: str = "ws") -> Any:
    """A forms (seed 003) workspace with a good card, subscribed to `plan` at `start`."""
    b = book("forms", start)
    assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    assert b.do(ws, "subscribe", plan=plan, interval=interval).ok
    return b


def workspace_on(book: Any, plan: str = "team", seats: int | None = 5, interval: str = "month",
                 start: str = "2026-04-01T00:00:00", ws: str = "ws") -> Any:
    """A workspace (seed 000) workspace with a good card, on `plan` with `seats` at `start`."""
    b = book("workspace", start)
    assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    args = {"seats": seats} if seats is not None else {}
    assert b.do(ws, "subscribe", plan=plan, interval=interval, **args).ok
    return b


def catalog_variant(tmp_path: Path, base: str, new_id: str, **policy: str) -> str:
    """A copy of a built-in catalog under another id with policy lines replaced (or added to its
    [policy] block), as a TOML path."""
    text = resources.files("domain.catalogs").joinpath(f"{base}.toml").read_text("utf-8")
    text = text.replace(f'id = "{base}"', f'id = "{new_id}"', 1)
    for key, value in policy.items():
        old = next((line for line in text.splitlines() if line.startswith(f"{key} =")), None)
        if old is None:
            text = text.replace("[policy]\n", f"[policy]\n{key} = {value}\n", 1)
        else:
            text = text.replace(old, f"{key} = {value}", 1)
    path = tmp_path / f"{new_id}.toml"
    path.write_text(text)
    return str(path)


BIG = """id = "big"
version = "1"
name = "Big"
currency = "USD"
[[plans]]
id = "a"
name = "A"
rank = 0
kind = "paid"
storage_gb = 1
per_seat = true
prices = { month = "1.00", year = "10.00" }
[[plans]]
id = "b"
name = "B"
rank = 1
kind = "paid"
storage_gb = 1
per_seat = true
max_seats = 100000
prices = { month = "9999999.00", year = "9999999.00" }
[[addons]]
id = "huge"
name = "Huge"
storage_gb = 1
prices = { month = "999999999999.00", year = "999999999999.00" }
"""
"""A catalog whose plan b (its most seats) and add-on renew above the largest amount the ledger records: `catalog
check` refuses it; the tests read it as a ledger that recorded it before the check."""
