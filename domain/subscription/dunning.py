"""Dunning: what follows a failed payment of an issued invoice (R8, R19, R20).

The first failure of an invoice starts its schedule: a retry with the default payment method on
each of the catalog's `dunning_retry_days` after it (e.g. 3, 5, 7), each one a scheduler item
that requests a collection through `billing.collect` (a new attempt, a new key). The days are
gaps between attempts as they happened: a scheduler that was not running makes one overdue
retry when it runs and the next one a gap later (next_retry, scheduler.next_due). When the last
retry fails the catalog's `dunning_final_action` applies: `cancel` ends the subscription at once,
`suspend` locks the paid features (R19) until every open invoice is paid. A payment the
customer makes (pay-invoice) never moves the schedule.

A workspace never renews over an unpaid invoice: the retry days end before the shortest period
does (catalog validation), a period end waits while a retry is scheduled (one a late scheduler
pushed past it), a suspended workspace does not renew, and a period end that finds an open
invoice anyway (an invoice from before dunning existed) applies the final action instead of
renewing. Paying every open invoice reactivates a suspended workspace; if its period ran out
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


def next_retry(sub: Subscription, invoice_id: str, purpose: str, failed_at: datetime, made: int,
               policy: Policy) -> datetime | None:
    """When the invoice is tried again after this failure, or None: no retry is left. Each retry
    comes the catalog's gap after the attempt before it failed: the first failure anchors the
    schedule (retry days 3, 5, 7: three days after it, then two, then two), and a retry made
    late, by a scheduler that was not running, moves the ones after it by as much, so a card is
    never tried twice without the gap between. `made`: the retries made, this one included. A
    failure of the customer's own attempt leaves the schedule as it is."""
    invoice = sub.invoices[invoice_id]
    days = policy.dunning_retry_days
    first = invoice["failed_at"]
    if first is None:
        return plus_days(failed_at, days[0]) if days else None
    if purpose != RETRY:
        return invoice["retry_at"]
    return plus_days(failed_at, days[made] - days[made - 1]) if 0 < made < len(days) else None


def record_failure(sub: Subscription, meta: dict[str, Any], policy: Policy, invoice_id: str, purpose: str,
                   failed_at: datetime, amount: Decimal, decline_code: str, message: str) -> None:
    """A collection of an issued invoice failed: the invoice stays open (R8) with its next retry,
    or, when none is left, the final action follows. A workspace already suspended or canceled
    is not dunned again."""
    dunned = sub.status not in ("suspended", "canceled")
    invoice = sub.invoices[invoice_id]
    made = invoice["retries"]
    if made is None:  # dunning begun before retries were counted: those made were due on the days before the next
        first, due = invoice["failed_at"], invoice["retry_at"] or failed_at
        made = sum(1 for d in policy.dunning_retry_days if first is not None and plus_days(first, d) < due)
    if purpose == RETRY:
        made += 1
    retry_at = next_retry(sub, invoice_id, purpose, failed_at, made, policy) if dunned else None
    first_failure = invoice["failed_at"] is None
    sub.trigger_event(PaymentFailed, **meta, invoice_id=invoice_id, amount=amount, decline_code=decline_code,
                      message=message, retry_at=retry_at, failed_at=invoice["failed_at"] or failed_at, retries=made)
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
    """Every open invoice of a suspended workspace paid: it is active again; a paid plan's period
    that ran out while suspended restarts at the payment (R8, R19). A free plan has no period to
    restart (suspended over its final invoice): anchoring one there left it forever due."""
    if sub.status != "suspended" or sub.open_invoices():
        return
    restart = at if sub.interval and (sub.period_end is None or sub.period_end <= at) else None
    cancelling = bool(sub.scheduled and sub.scheduled["kind"] == "cancel")
    sub.trigger_event(WorkspaceReactivated, **meta, restart_at=restart,
                      status="cancel_scheduled" if cancelling else "active")
