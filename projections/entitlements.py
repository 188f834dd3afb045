"""entitlements: one row per workspace, what it may do now (R19), for downstream services.

The row is `domain.entitlements.entitlements` of the aggregate folded to the workspace's last
event, the same function `subledger check-upload` and `check-feature` decide with.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from domain.entitlements import entitlements
from projections.readmodel import LatestPerWorkspace
from projections.store import UtcDateTime, dumps, insert_rows


class Entitlements(LatestPerWorkspace):
    """v2: counts (seats, members, credits, operations, gigabytes) are 64-bit: a catalog may set up to
    a billion of each (domain/catalog.py MAX_COUNT), and their sums and products outgrow 32 bits."""

    family = "entitlements"
    version = 2
    tables = ("entitlements",)

    @classmethod
    def define(cls, metadata: MetaData, tag: str) -> dict[str, Table]:
        return {"entitlements": Table(
            cls.table_name("entitlements", tag), metadata,
            Column("workspace", String(64), primary_key=True),
            Column("plan", String(64)),
            Column("status", String(24), nullable=False),
            Column("features", Text, nullable=False),
            Column("locked_features", Text, nullable=False),
            Column("limits", Text, nullable=False),
            Column("usage", Text, nullable=False),
            Column("seat_limit", BigInteger),
            Column("members", BigInteger, nullable=False),
            Column("storage_limit_gb", BigInteger, nullable=False),
            Column("storage_used_gb", String(40), nullable=False),
            Column("storage_read_only", Boolean, nullable=False),
            Column("webhooks_firing", Boolean, nullable=False),
            Column("operations_remaining", BigInteger, nullable=False),
            Column("ai_credits", BigInteger, nullable=False),
            Column("position", Integer, nullable=False),
            Column("updated_at", UtcDateTime, nullable=False),
        )}

    def finish(self, session: Session) -> None:
        if not self.latest:
            return
        table = self.view.t["entitlements"]
        session.execute(delete(table).where(table.c.workspace.in_(list(self.latest))))
        rows = []
        for sub, tracking, event in self.latest.values():
            ent = entitlements(sub, self.fold.catalog(sub))
            rows.append({
                "workspace": sub.workspace_id, "plan": ent.plan, "status": ent.status,
                "features": dumps(ent.features), "locked_features": dumps(ent.locked_features),
                "limits": dumps(ent.limits), "usage": dumps(ent.usage), "seat_limit": ent.limits["seats"],
                "members": ent.usage["members"], "storage_limit_gb": ent.storage_limit_gb,
                "storage_used_gb": ent.usage["storage_gb"], "storage_read_only": ent.storage_read_only,
                "webhooks_firing": ent.webhooks_firing, "operations_remaining": ent.usage["operations_remaining"],
                "ai_credits": ent.usage["ai_credits"], "position": tracking.notification_id,
                "updated_at": event.timestamp,
            })
        insert_rows(session, table, rows)


def read_entitlements(conn: Connection, workspace: str) -> dict[str, Any] | None:
    """A workspace's entitlements document (as `subledger entitlements --json` prints it), or None."""
    t = Entitlements.stable()["entitlements"]
    row = conn.execute(select(t).where(t.c.workspace == workspace)).mappings().first()
    if row is None:
        return None
    return {
        "workspace": row["workspace"], "plan": row["plan"], "status": row["status"],
        "features": json.loads(row["features"]), "locked_features": json.loads(row["locked_features"]),
        "limits": json.loads(row["limits"]), "usage": json.loads(row["usage"]),
        "storage_read_only": row["storage_read_only"], "webhooks_firing": row["webhooks_firing"],
    }
