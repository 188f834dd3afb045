"""Which events one command recorded together: the context a read model needs to say
which events produced an invoice line, or what an upgrade charged.

One command's events are saved in one transaction with one timestamp, cause and actor,
so its neighbours in the workspace's stream are read back from the ledger's event store
(committed with it) and grouped by those fields; a bill's own events end a group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.subscription import Subscription

REACH = 25
BILL_EVENTS = (Subscription.InvoiceIssued, Subscription.PaymentSucceeded, Subscription.PaymentFailed,
               Subscription.BillingCreditIssued, Subscription.BillingCreditApplied)


def same_command(a: Any, b: Any) -> bool:
    return (a.timestamp, a.cause, a.actor_id, a.idempotency_key) == (b.timestamp, b.cause, b.actor_id, b.idempotency_key)


def preceding(source: Any, event: Subscription.Event, seen: Mapping[int, Any] | None = None) -> list[Subscription.Event]:
    """The events the same command recorded before `event` and after any earlier bill, oldest first.
    `seen` (version -> event, the workspace's events already projected in this batch) spares a
    read of the event store when the whole group is in it."""
    v = event.originator_version
    lowest = max(v - 1 - REACH, 0)
    group: list[Subscription.Event] = []
    for w in range(v - 1, lowest, -1):
        e = (seen or {}).get(w)
        if e is None:
            stored = source.events.get(event.originator_id, gt=lowest, lte=v - 1)
            return preceding(source, event, {e.originator_version: e for e in stored})
        if not same_command(e, event) or isinstance(e, BILL_EVENTS):
            break
        group.append(e)
    return group[::-1]


def following(source: Any, event: Subscription.Event) -> list[Subscription.Event]:
    """The events the same command recorded after `event`, oldest first."""
    v = event.originator_version
    later = source.events.get(event.originator_id, gt=v, lte=v + REACH)
    group: list[Subscription.Event] = []
    for e in later:
        if not same_command(e, event):
            break
        group.append(e)
    return group
