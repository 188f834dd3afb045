"""The Subscription aggregate, split by rule family:

- aggregate.py: the aggregate, its typed state and views, decide / record / settle
- plan_changes.py: subscribe, upgrades, downgrades, cancellation (R4, R11-R18)
- seats_storage.py: seats, members, storage and storage add-ons (R5, R6, R21, R22, R24)
- credits_operations.py: AI credits and operations (R16, R18, R23, R27)
- billing.py: invoices, billing credit, charges and payments (R7, R8, R10, R12, R25-R27)
- scheduler.py: renewals, trial ends, scheduled changes, notices (R14, R15, R17, R18)
- events.py, usage_events.py, billing_events.py: the facts; context.py: what a decision is given and gives
- dunning.py: retries of a failed renewal and the final action (R8, R19, R20)

Event classes lived in `domain.events` and the aggregate in `domain.subscription` before
this split; their stored topics still resolve (register_topic below).
"""

from eventsourcing.utils import register_topic

from domain.subscription import billing_events, events, usage_events
from domain.subscription.aggregate import Subscription, workspace_uuid
from domain.subscription.billing import charge_declined, payment_failed
from domain.subscription.context import Context, Decision

register_topic("domain.subscription:Subscription", Subscription)
for _module in (events, billing_events, usage_events):
    for _name, _cls in vars(_module).items():
        if isinstance(_cls, type) and issubclass(_cls, events.Event) and _cls.__module__ == _module.__name__:
            register_topic(f"domain.events:{_name}", _cls)
            if _module is usage_events:  # AI credit and operations facts moved out of events.py (issue 7)
                register_topic(f"domain.subscription.events:{_name}", _cls)

__all__ = ["Context", "Decision", "Subscription", "charge_declined", "payment_failed", "workspace_uuid"]
