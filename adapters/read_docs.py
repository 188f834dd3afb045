"""Read documents the command line and the HTTP API both answer with, built in one place so
the two never differ."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from domain.money import fmt
from projections.journal import trial_balances
from projections.views import iso

SIGNS = "debits are positive, credits negative; every entry balances, so each currency's total is zero"


def trial_balance_document(conn: Connection, workspace: str | None, at: datetime | None) -> dict[str, Any]:
    """The journal's trial balance per currency (of one workspace or all), as of `at` (inclusive)."""
    balances = trial_balances(conn, workspace, at)
    return {"workspace": workspace, "at": iso(at), "signs": SIGNS, "currencies": {
        currency: {"accounts": {a: fmt(v, currency) for a, v in sorted(accounts.items())},
                   "total": fmt(sum(accounts.values(), Decimal(0)), currency)}
        for currency, accounts in sorted(balances.items())}}
