"""The facts of AI credits and operations: grants, packs, use, carry-over, resets (R16, R18, R19,
R23), and how each one changes the aggregate. They lived in events.py until issue 7; their
stored topics still resolve (domain/subscription/__init__.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.subscription.events import Event

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription


class AICreditPackBought(Event):
    pack: str
    credits: int
    price: Decimal
    invoice_id: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ai_purchased += self.credits

class AICreditsGranted(Event):
    """A grant window opens (R23): `credits` replace what the last window left (`expired`).
    The window is worth `credits + debt_repaid`: credits spent beyond what earlier windows were
    paid for are taken from it first. `next_grant_at`: the next monthly grant inside an
    annual period (policy `ai_grant_cadence = "month"`), else None. v3 added both."""

    class_version = 3
    credits: int
    expired: int
    debt_repaid: int
    next_grant_at: datetime | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["debt_repaid"] = 0
        state["next_grant_at"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ai_granted = self.credits
        sub.ai_debt -= self.debt_repaid
        sub.ai_worth = sub.ai_rate = self.credits + self.debt_repaid
        sub.ai_grant_at = self.next_grant_at


class AICreditsProrated(Event):
    """The rest of a grant window is paid at a lower rate (its unused time credited back, R23):
    the window is now worth `worth` credits, `rate` for a whole window from here on. What it no
    longer covers is `withdrawn` from the unspent grant; credits already spent beyond it become
    `debt`, taken from the next grants. `formula` shows the arithmetic."""

    worth: int
    rate: int
    withdrawn: int
    debt: int
    formula: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ai_granted -= self.withdrawn
        sub.ai_debt += self.debt
        sub.ai_worth, sub.ai_rate = self.worth, self.rate

class AICreditsConsumed(Event):
    credits: int
    from_granted: int
    from_purchased: int

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ai_granted -= self.from_granted
        sub.ai_purchased -= self.from_purchased

class OperationsUsed(Event):
    """`overage`: operations beyond the allowance. With policy `overage = "bill"` they are billed
    on the next invoice at `billed_rate_price / billed_rate_operations` (None: not billed).
    v3 added the rate."""

    class_version = 3
    operations: int
    from_carried: int
    from_allotment: int
    from_extra: int
    overage: int
    billed_rate_price: Decimal | None
    billed_rate_operations: int | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["billed_rate_price"] = None
        state["billed_rate_operations"] = None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_carried -= self.from_carried
        sub.ops_allotment -= self.from_allotment
        sub.ops_extra -= self.from_extra
        billed = self.overage if self.billed_rate_price is not None and self.billed_rate_operations else 0
        rate = {"price": self.billed_rate_price, "operations": self.billed_rate_operations}
        if billed:
            add_overage(sub.ops_overage, billed, rate)
        for pending in sub.pending_charges.values():  # a held change priced the pools before this
            if pending["effects"]:
                reported = pending.setdefault("ops_reported", {"operations": 0, "carried": 0, "allotment": 0,
                                                               "extra": 0, "overage": []})
                reported["operations"] += self.operations
                reported["carried"] += self.from_carried
                reported["allotment"] += self.from_allotment
                reported["extra"] += self.from_extra
                if billed:
                    add_overage(reported["overage"], billed, dict(rate))


def add_overage(pools: list[Any], operations: int, rate: dict[str, Any]) -> None:
    """`operations` beyond the allowance added to the unbilled ones at `rate`."""
    pool = next((p for p in pools if p["rate"] == rate), None)
    if pool is None:
        pools.append({"operations": operations, "rate": rate})
    else:
        pool["operations"] += operations


class OperationsRecounted(Event):
    """The `operations` reported while the change paid on `invoice_id` waited for its charge,
    counted again against the pools the change set up, as if it had been paid at once
    (domain/subscription/operations_pools.py): `from_*` and `overage` are where they come from
    now, `carried`, `allotment`, `extra` and `unbilled_overage` the pools after them."""

    invoice_id: str
    operations: int
    from_carried: int
    from_allotment: int
    from_extra: int
    overage: int
    carried: int
    allotment: int
    extra: int
    unbilled_overage: list[dict[str, Any]]

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_carried, sub.ops_allotment, sub.ops_extra = self.carried, self.allotment, self.extra
        sub.ops_overage = [{"operations": p["operations"], "rate": dict(p["rate"])} for p in self.unbilled_overage]


class OperationsOverageBilled(Event):
    """The operations used beyond the allowance are on invoice `invoice_id` (policy `overage = "bill"`)."""

    operations: int
    amount: Decimal
    invoice_id: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_overage = []

class OperationsBought(Event):
    operations: int
    price: Decimal
    invoice_id: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_extra += self.operations

class OperationsCarriedOver(Event):
    """Unused operations moved into the new plan (R18), at the rate they were paid for."""

    operations: int
    until: datetime
    rate_price: Decimal
    rate_operations: int

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_carried, sub.ops_carried_until = self.operations, self.until
        sub.ops_carried_rate = {"price": self.rate_price, "operations": self.rate_operations}

class OperationsConvertedToCredit(Event):
    operations: int
    amount: Decimal
    formula: str

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_carried = sub.ops_extra = 0
        sub.ops_carried_until = None

class OperationsReset(Event):
    allotment: int
    expired_extra: int
    next_reset_at: datetime | None

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_allotment = self.allotment
        sub.ops_extra -= self.expired_extra
        sub.ops_reset_at = self.next_reset_at

class OperationsExpired(Event):
    operations: int

    def apply(self, sub: Subscription) -> None:
        super().apply(sub)
        sub.ops_carried = 0
        sub.ops_carried_until = None
