"""What a decision is given (Context) and what it gives back (Decision, ChargeDue)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.catalog import Catalog
from domain.commands import SYSTEM, Actor

if TYPE_CHECKING:
    from domain.subscription.aggregate import Subscription
    from domain.subscription.events import Event


@dataclass(frozen=True)
class Context:
    """Who asks, when, through which channel and why; the command's id and the catalog."""

    actor: Actor
    channel: str
    at: datetime
    catalog: Catalog
    cause: str
    reason: str | None = None
    idempotency_key: str | None = None
    args_hash: str | None = None
    command_id: str | None = None

    def system(self, at: datetime, cause: str) -> Context:
        """A scheduler fact due at `at`, recorded as part of the same run (same command id)."""
        return Context(SYSTEM, "scheduler", at, self.catalog, cause, command_id=self.command_id)

    def at_instant(self, at: datetime) -> Context:
        return replace(self, at=at)

    def meta(self) -> dict[str, Any]:
        return {
            "timestamp": self.at,
            "actor_id": self.actor.id,
            "actor_role": self.actor.role,
            "channel": self.channel,
            "cause": self.cause,
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
            "args_hash": self.args_hash,
            "command_id": self.command_id,
            "catalog_version": f"{self.catalog.id}@{self.catalog.version}",
            "catalog_hash": self.catalog.content_hash,
        }


@dataclass(frozen=True)
class ChargeDue:
    """A decision that needs money now: what it pays for is recorded only once the charge succeeds."""

    invoice_id: str
    amount: Decimal
    payment_method: str
    purpose: str
    plan: str | None


@dataclass
class Decision:
    """A command decided on a copy of the aggregate: the facts it would record if its charge (if
    any) succeeds, and the copy as it would then be (what a preview shows, R25)."""

    effects: list[Event]
    charge: ChargeDue | None
    outcome: Subscription
