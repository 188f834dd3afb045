"""Quotes (R25): a preview's lines pinned so that the command commits exactly those lines.

A pin carries what the previewed lines depended on: the workspace's version when it was
loaded, the catalog's content hash and the invoice terms the preview showed. `Ledger.handle`
checks it inside its decide/save loop, so the check and the recording are one step: a writer
that comes between makes the save fail, the loop reloads and the pin no longer holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.catalog import Catalog
from domain.errors import LedgerError
from domain.subscription import Subscription


@dataclass(frozen=True)
class Pin:
    """What a quote promised: `version` is the workspace's recorded version it was quoted on
    (0 for a workspace not yet registered), `terms` the invoice_terms of its preview."""

    version: int
    catalog_hash: str
    terms: list[dict[str, Any]]

    def check_quoted(self, version: int, catalog: Catalog) -> None:
        """Refuse `quote_stale` unless the workspace and the catalog are the quoted ones: checked
        before the command is decided, so a quote already committed says so, not what the
        command would meet now (already_on_plan)."""
        if version != self.version:
            raise LedgerError("quote_stale", f"the workspace changed since the quote (version {self.version} -> "
                              f"{version}): preview again")
        if catalog.content_hash != self.catalog_hash:
            raise LedgerError("quote_stale", "the catalog changed since the quote: preview again")

    def check_lines(self, effects: list[Any]) -> None:
        """Refuse `quote_stale` unless the decided lines are the quoted ones (a later instant that
        changes the proration changes the lines)."""
        if invoice_terms(effects) != self.terms:
            raise LedgerError("quote_stale", "the lines differ from the quoted ones now (time moved on and the "
                              "proration changed): preview again")


def invoice_terms(events: list[Any]) -> list[dict[str, Any]]:
    """The invoices among `events` as plain JSON values: what a quote compares. Left out are the
    invoice id (the workspace's next number whenever it is issued) and each line's period: its
    start is the instant the change applies, the commit's, and its end says nothing of its own,
    being either the workspace's period end (fixed by the pinned version) or, for a new cycle
    (a subscription, a new interval), that start plus the interval. The amounts, quantities and
    formulas must be the quoted ones: a later day that changes the proration changes them."""
    return [_plain({"purpose": e.purpose, "subtotal": e.subtotal, "credit_applied": e.credit_applied,
                    "amount_due": e.amount_due, "currency": e.currency,
                    "lines": [{k: v for k, v in line.items() if k not in PERIOD} for line in e.lines]})
            for e in events if isinstance(e, Subscription.InvoiceIssued)]


PERIOD = ("period_start", "period_end")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value
