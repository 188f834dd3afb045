"""plan_state: one row per workspace, the state every adapter shows.

The row is the rendering of `projections.views.plan_state` (the scenario contract) for
the aggregate folded to this event, stored both as typed columns for SQL and as the exact
JSON document, so `subledger show` and the scenario runner say the same thing.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import Tracking
from sqlalchemy import (
    BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, delete, select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.subscription import Subscription
from projections.readmodel import LatestPerWorkspace
from projections.store import Amount, UtcDateTime, dumps, insert_rows
from projections.views import plan_state


class PlanState(LatestPerWorkspace):
    """v2: counts (seats, members, credits, operations, gigabytes) are 64-bit: a catalog may set up to
    a billion of each (domain/catalog.py MAX_COUNT), and their sums and products outgrow 32 bits."""

    family = "plan_state"
    version = 2
    tables = ("plan_state",)

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {"plan_state": Table(
            cls.table_name("plan_state", tag), metadata,
            Column("workspace", String(64), primary_key=True),
            Column("catalog", String(64), nullable=False),
            Column("plan", String(64)),
            Column("tier", BigInteger),
            Column("interval", String(8)),
            Column("seats", BigInteger),
            Column("members", BigInteger, nullable=False),
            Column("over_seat", Boolean, nullable=False),
            Column("status", String(24), nullable=False),
            Column("period_start", UtcDateTime),
            Column("period_end", UtcDateTime),
            Column("scheduled_change", Text),
            Column("scheduled_at", UtcDateTime),
            Column("billing_credit", Amount, nullable=False),
            Column("currency", String(3), nullable=False),
            Column("ai_credits_granted", BigInteger, nullable=False),
            Column("ai_credits_purchased", BigInteger, nullable=False),
            Column("operations_remaining", BigInteger, nullable=False),
            Column("open_invoice", String(96)),
            Column("storage_used_gb", String(40), nullable=False),
            Column("storage_limit_gb", BigInteger, nullable=False),
            Column("storage_read_only", Boolean, nullable=False),
            Column("addons", Text, nullable=False),
            Column("features", Text, nullable=False),
            Column("contract", String(64)),
            Column("on_contract", Boolean, nullable=False),
            Column("payment_method", String(96)),
            Column("catalog_version", String(64)),
            Column("last_event_version", Integer, nullable=False),
            Column("position", Integer, nullable=False),
            Column("updated_at", UtcDateTime, nullable=False),
            Column("state", Text, nullable=False),
        )}

    def finish(self, session: Session) -> None:
        if not self.latest:
            return
        table = self.view.t["plan_state"]
        session.execute(delete(table).where(table.c.workspace.in_(list(self.latest))))
        insert_rows(session, table, [row(sub, self.fold.catalog(sub), tracking, event, self.fold.state(sub))
                                     for sub, tracking, event in self.latest.values()])


def row(sub: Subscription, catalog: Any, tracking: Tracking, event: Subscription.Event,
        state: dict[str, Any] | None = None) -> dict[str, Any]:
    state = state if state is not None else plan_state(sub, catalog)
    scheduled = sub.scheduled
    return {
        "workspace": sub.workspace_id,
        "catalog": sub.catalog_id,
        "plan": state["plan"],
        "tier": state["tier"],
        "interval": state["interval"],
        "seats": state["seats"],
        "members": state["members"],
        "over_seat": state["over_seat"],
        "status": state["status"],
        "period_start": sub.period_start,
        "period_end": sub.period_end,
        "scheduled_change": dumps(state["scheduled_change"]) if scheduled else None,
        "scheduled_at": scheduled["effective_at"] if scheduled else None,
        "billing_credit": sub.billing_credit,
        "currency": catalog.currency,
        "ai_credits_granted": state["ai_credits_granted"],
        "ai_credits_purchased": state["ai_credits_purchased"],
        "operations_remaining": state["operations_remaining"],
        "open_invoice": state["open_invoice"],
        "storage_used_gb": state["storage_used_gb"],
        "storage_limit_gb": state["storage_limit_gb"],
        "storage_read_only": state["storage_read_only"],
        "addons": dumps([sub.storage_addon] if sub.storage_addon else []),
        "features": dumps(state["features"]),
        "contract": sub.contract,
        "on_contract": sub.contract is not None,
        "payment_method": state["payment_method"],
        "catalog_version": state["catalog_version"],
        "last_event_version": sub.version,
        "position": tracking.notification_id,
        "updated_at": event.timestamp,
        "state": dumps(state),
    }


def read_plan_state(conn: Connection, workspace: str) -> dict[str, Any] | None:
    """The `state` document of a workspace, from the active plan_state read model."""
    table = PlanState.stable()["plan_state"]
    found = conn.execute(select(table.c.state).where(table.c.workspace == workspace)).scalar_one_or_none()
    return json.loads(found) if found is not None else None


def read_plan_states(conn: Connection) -> list[dict[str, Any]]:
    """The `state` document of every workspace, by workspace id."""
    table = PlanState.stable()["plan_state"]
    return [json.loads(found) for found in conn.execute(select(table.c.state).order_by(table.c.workspace)).scalars()]
