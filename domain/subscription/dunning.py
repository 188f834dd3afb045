"""Dunning: what follows a failed payment of an issued invoice (R8, R19, R20).

The first failure of an invoice starts its schedule: a retry with the default payment method on
each of the catalog's `dunning_retry_days` after it (e.g. 3, 5, 7), each one a scheduler item
that requests a collection through `billing.collect` (a new attempt, a new key). When the last
retry fails the catalog's `dunning_final_action` applies: `cancel` ends the subscription at once,
`suspend` locks the paid features (R19) until every open invoice is paid. A payment the
customer makes (pay-invoice) never moves the schedule.

A workspace never renews over an unpaid invoice: the retry days end before the shortest period
does (catalog validation), a suspended workspace does not renew, and a period end that finds an
open invoice anyway (an invoice from before dunning existed) applies the final action instead
of renewing. Paying every open invoice reactivates a suspended workspace; if its period ran out
meanwhile, a new one starts at the payment (anchored there, invoiced by the scheduler's next run).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.catalog import Policy
from domain.periods import plus_days
from domain.subscription.billing_events import PaymentFailed
from domain.subscription.events import SubscriptionCanceled, WorkspaceReactivated, WorkspaceSuspended

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription

RETRY = "dunning_retry"
"""The purpose of a collection the scheduler requests on a retry day."""


def next_retry(sub: Subscription, invoice_id: str, purpose: str, attempt_at: datetime, policy: Policy) -> datetime | None:
    """When the invoice is tried again after this failure, or None: no retry is left. The first
    failure (at the attempt's instant) anchors the schedule; a failed retry moves to the next
    day on it; a failure of the customer's own attempt leaves the schedule as it is."""
    invoice = sub.invoices[invoice_id]
    first = invoice["failed_at"]
    if first is None:
        schedule = [plus_days(attempt_at, d) for d in policy.dunning_retry_days]
        return schedule[0] if schedule else None
    if purpose != RETRY:
        return invoice["retry_at"]
    schedule = [plus_days(first, d) for d in policy.dunning_retry_days]
    due = invoice["retry_at"] or attempt_at
    return next((at for at in schedule if at > due), None)


def record_failure(sub: Subscription, meta: dict[str, Any], policy: Policy, invoice_id: str, purpose: str,
                   attempt_at: datetime, amount: Decimal, decline_code: str, message: str) -> None:
    """A collection of an issued invoice failed: the invoice stays open (R8) with its next retry,
    or, when none is left, the final action follows. A workspace already suspended or canceled
    is not dunned again."""
    dunned = sub.status not in ("suspended", "canceled")
    retry_at = next_retry(sub, invoice_id, purpose, attempt_at, policy) if dunned else None
    first_failure = sub.invoices[invoice_id]["failed_at"] is None
    sub.trigger_event(PaymentFailed, **meta, invoice_id=invoice_id, amount=amount, decline_code=decline_code,
                      message=message, retry_at=retry_at, failed_at=sub.invoices[invoice_id]["failed_at"] or attempt_at)
    if dunned and retry_at is None and (purpose == RETRY or first_failure):
        final_action(sub, meta, policy, invoice_id)


def final_action(sub: Subscription, meta: dict[str, Any], policy: Policy, invoice_id: str) -> None:
    """After the last failed retry (or at a period end that finds an invoice still open)."""
    if policy.dunning_final_action == "none":
        return
    if policy.dunning_final_action == "cancel":
        sub.trigger_event(SubscriptionCanceled, **meta, plan=sub.plan)
    elif sub.status != "suspended":
        sub.trigger_event(WorkspaceSuspended, **meta, invoice_id=invoice_id)


def after_payment(sub: Subscription, meta: dict[str, Any], at: datetime) -> None:
    """Every open invoice of a suspended workspace paid: it is active again; a period that ran
    out while suspended restarts at the payment (R8, R19)."""
    if sub.status != "suspended" or sub.open_invoices():
        return
    restart = at if sub.period_end is None or sub.period_end <= at else None
    sub.trigger_event(WorkspaceReactivated, **meta, restart_at=restart)
