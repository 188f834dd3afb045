"""Which events one command recorded: the context a read model needs to say which events
produced an invoice line, or what an upgrade charged.

Every fact carries the id of the command that recorded it (its payment's outcome included,
whoever recorded that), so a command's events are those with its id. Other commands' facts
may stand between them (a charge awaiting 3-D Secure while members change): they are skipped.
Facts recorded before command ids existed are grouped, as they were then, with their adjacent
neighbours of the same timestamp, cause, actor and idempotency key. A bill's own events end a
group, so one command's two bills keep their own sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.subscription import Subscription

REACH = 25
BILL_EVENTS = (Subscription.InvoiceIssued, Subscription.PaymentSucceeded, Subscription.PaymentFailed,
               Subscription.BillingCreditIssued, Subscription.BillingCreditApplied)


def same_command(a: Any, b: Any) -> bool | None:
    """True or False; None for a legacy neighbour of another command (it ends the group)."""
    if a.command_id or b.command_id:
        return a.command_id == b.command_id
    legacy = (a.timestamp, a.cause, a.actor_id, a.idempotency_key) == (b.timestamp, b.cause, b.actor_id, b.idempotency_key)
    return True if legacy else None


def preceding(source: Any, event: Subscription.Event, seen: Mapping[int, Any] | None = None) -> list[Subscription.Event]:
    """The events the same command recorded before `event` and after any earlier bill, oldest first.
    `seen` (version -> event, the workspace's events already projected in this batch) spares a
    read of the event store when the whole window is in it."""
    v = event.originator_version
    lowest = max(v - 1 - REACH, 0)
    group: list[Subscription.Event] = []
    for w in range(v - 1, lowest, -1):
        e = (seen or {}).get(w)
        if e is None:
            stored = source.events.get(event.originator_id, gt=lowest, lte=v - 1)
            return preceding(source, event, {e.originator_version: e for e in stored})
        same = same_command(e, event)
        if same is None or (same and isinstance(e, BILL_EVENTS)):
            break
        if same:
            group.append(e)
    return group[::-1]


def following(source: Any, event: Subscription.Event, seen: Mapping[int, Any] | None = None) -> list[Subscription.Event]:
    """The events the same command recorded after `event`, oldest first. `seen` (version -> event)
    spares a read of the event store when the whole window is in it."""
    v = event.originator_version
    window = [(seen or {}).get(w) for w in range(v + 1, v + REACH + 1)]
    stored = window if all(e is not None for e in window) else \
        source.events.get(event.originator_id, gt=v, lte=v + REACH)
    group: list[Subscription.Event] = []
    for e in stored:
        same = same_command(e, event)
        if same is None:
            break
        if same:
            group.append(e)
    return group


def charge_request(source: Any, event: Any, seen: Mapping[int, Any] | None = None) -> Any:
    """The `ChargeRequested` of `event.invoice_id` recorded before `event` (its outcome), or None.
    Read from the events, not the aggregate: the outcome empties the pending charge. `seen` as in
    `preceding`; past it the store is read back a page at a time (a charge awaiting 3-D Secure
    may lie far behind its outcome)."""
    invoice_id = getattr(event, "invoice_id", None)
    if not invoice_id:
        return None
    seen, version = seen or {}, event.originator_version - 1
    while version > 0 and version in seen:
        found = seen[version]
        if isinstance(found, Subscription.ChargeRequested) and found.invoice_id == invoice_id:
            return found
        version -= 1
    while version > 0:
        page = list(source.events.get(event.originator_id, lte=version, desc=True, limit=REACH))
        for found in page:
            if isinstance(found, Subscription.ChargeRequested) and found.invoice_id == invoice_id:
                return found
        version = page[-1].originator_version - 1 if page else 0
    return None
