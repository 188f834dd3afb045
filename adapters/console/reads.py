"""What each console page shows, gathered from the same read models and replay functions the
CLI's read commands use (adapters/read_cli.py, adapters/project_cli.py, adapters/replay_cli.py).
Every function checks first that the caller may read the workspace; nothing here writes."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from adapters.http.access import replayable_workspace, what_if_workspace
from adapters.http.auth import require_read
from adapters.tokens import READ_ALL_ROLES, WORKSPACE_ROLES, Principal
from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.money import fmt
from domain.subscription.billing_events import workspace_of_invoice
from projections import audit_trail
from projections.entitlements import read_entitlements
from projections.invoices import invoices_of
from projections.plan_state import PlanState, read_plan_state
from projections.upcoming_invoice import upcoming_of
from replay import explain_format
from replay.as_of import as_of, document
from replay.explain import explain
from replay.history import Catalogs
from replay.verify import event_chain, stream_names

SEARCH_LIMIT = 50
TIMELINE_LIMIT = 500
HIDDEN_FIELDS = {"version"}
"""Changed fields not worth a line in the timeline: every event moves the version."""


def readable(caller: Principal, workspace: str) -> str:
    """The workspace id, checked for shape and for the caller's right to read it."""
    check_workspace_id(workspace)
    require_read(caller, workspace)
    return workspace


def replayable(caller: Principal, workspace: str) -> str:
    """Explain and as-of, for whom the API gives them (adapters/http/access.py): support, and
    the workspace's admins."""
    return replayable_workspace(readable(caller, workspace), caller)


def what_if_able(caller: Principal, workspace: str) -> str:
    """What-if, for whom the API gives it: support only."""
    return what_if_workspace(readable(caller, workspace), caller)


def search(conn: Connection, caller: Principal, query: str) -> list[dict[str, Any]]:
    """Workspaces whose id starts with `query` (all of them when empty) that the caller reads,
    with plan, status, open invoices, amount due and billing credit."""
    if caller.role not in READ_ALL_ROLES | WORKSPACE_ROLES:
        raise LedgerError("forbidden", f"a token with role {caller.role} reads no workspace")
    query = query.strip()[:64]
    table = PlanState.stable()["plan_state"]
    statement = select(table.c.state).order_by(table.c.workspace).limit(SEARCH_LIMIT)
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(table.c.workspace.like(f"{escaped}%", escape="\\"))
    if caller.role not in READ_ALL_ROLES:
        statement = statement.where(table.c.workspace == caller.workspace_id)
    found = []
    for text in conn.execute(statement).scalars():
        state = json.loads(text)
        due = sum((Decimal(i["amount_due"]) for i in state["open_invoices"]), Decimal(0))
        minor_unit = Decimal(state["billing_credit"])  # written to the currency's minor unit: its places
        found.append({**state, "amount_due": str(due.quantize(minor_unit))})
    return found


def state_of(conn: Connection, workspace: str) -> dict[str, Any]:
    state = read_plan_state(conn, workspace)
    if state is None:
        raise LedgerError("not_found", f"{workspace}: no such workspace")
    return state


def shown(value: Any) -> str:
    """A before/after value on one short line."""
    if value is None:
        return "none"
    if isinstance(value, list):
        value = ", ".join(v.get("id", str(v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    elif isinstance(value, dict):
        value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def timeline(conn: Connection, workspace: str, kind: str | None, since: datetime | None,
             until: datetime | None) -> tuple[list[dict[str, Any]], list[str], int]:
    """The audit trail's rows (one per event), filtered; the kinds there are; how many matched."""
    every = list(audit_trail.rows(conn, workspace))
    kinds = sorted({row["event_type"] for row in every})
    rows = [row for row in every if (not kind or row["event_type"] == kind)
            and (since is None or row["occurred_at"] >= since) and (until is None or row["occurred_at"] < until)]
    out = []
    for row in rows[-TIMELINE_LIMIT:]:
        before, after = json.loads(row["before"]), json.loads(row["after"])
        changes = [{"field": k, "before": shown(before.get(k)), "after": shown(after.get(k))}
                   for k in sorted(after) if k not in HIDDEN_FIELDS]
        if row["version"] == 1:
            changes = []  # the registration: every field starts, the summary says so
        impact = row["money_impact"]
        out.append({**audit_trail.exported(row), "changes": changes,
                    "money": fmt(impact, row["currency"]) if impact is not None else None,
                    "invoice": _invoice_named(row["summary"], workspace)})
    return out, kinds, len(rows)


def _invoice_named(summary: str, workspace: str) -> str | None:
    prefix = f"in_{workspace}_"
    for word in summary.replace(":", " ").replace(",", " ").split():
        if word.startswith(prefix):
            return word
    return None


def balances(conn: Connection, workspace: str) -> list[dict[str, Any]]:
    """Billing credit and AI credits after each event that changed either, from the audit
    trail's after-states (the same plan_state document the workspace page shows)."""
    points: list[dict[str, Any]] = []
    credit, ai = Decimal(0), 0
    for row in audit_trail.rows(conn, workspace):
        after = json.loads(row["after"])
        if "billing_credit" not in after and "ai_credits" not in after:
            continue
        credit = Decimal(after.get("billing_credit") or credit)
        ai = int(after.get("ai_credits") if after.get("ai_credits") is not None else ai)
        point = {"at": row["occurred_at"], "billing_credit": credit, "ai_credits": ai, "currency": row["currency"]}
        if points and points[-1]["at"] == point["at"]:
            points[-1] = point
        else:
            points.append(point)
    return points


def chain_status(ledger: Ledger, conn: Connection, workspace: str) -> dict[str, Any]:
    """The stored events against their hash chain, and the audit trail's own chain."""
    events = event_chain(ledger, stream_names(ledger), workspace)
    audit = audit_trail.verify(conn, workspace)
    return {"ok": events["ok"] and audit["ok"], "events": events, "audit": audit}


def workspace_page(ledger: Ledger, conn: Connection, workspace: str, kind: str | None, since: datetime | None,
                   until: datetime | None) -> dict[str, Any]:
    state = state_of(conn, workspace)
    rows, kinds, matched = timeline(conn, workspace, kind, since, until)
    invoices = invoices_of(conn, workspace)
    return {"workspace": workspace, "state": state, "entitlements": read_entitlements(conn, workspace),
            "timeline": rows, "kinds": kinds, "matched": matched, "limit": TIMELINE_LIMIT,
            "invoices": invoices,
            "upcoming": upcoming_of(conn, workspace),
            "balances": balances(conn, workspace), "chain": chain_status(ledger, conn, workspace)}


def invoice_page(ledger: Ledger, conn: Connection, workspace: str, invoice_id: str) -> dict[str, Any]:
    """The explanation of one invoice of the workspace (replay explain), its status and
    payments (the invoices read model), and the markdown reply."""
    if workspace_of_invoice(invoice_id) != workspace or len(invoice_id) > 96:
        raise LedgerError("not_found", f"{workspace} has no invoice {invoice_id[:40]}")
    doc = explain(ledger, invoice_id)
    if doc["workspace"] != workspace:
        raise LedgerError("not_found", f"{workspace} has no invoice {invoice_id[:40]}")
    recorded = next((i for i in invoices_of(conn, workspace) if i["invoice_id"] == invoice_id), None)
    events = {e["id"]: e for e in doc["events"]}
    for line in doc["lines"]:
        line["event_rows"] = [events[i] for i in line["events"] if i in events]
    return {"workspace": workspace, "doc": doc, "invoice": recorded, "reply": explain_format.markdown(doc)}


def as_of_page(ledger: Ledger, workspace: str, at: datetime | None) -> dict[str, Any]:
    """The workspace as its events leave it at `at` (replay as-of), with plan names."""
    found = as_of(ledger, workspace, at=at) if at is not None else None
    if found is None:
        return {"workspace": workspace, "at": None, "doc": None}
    doc = document(ledger, found)
    plan_name = None
    if found.sub is not None and doc["state"].get("plan"):
        plan = Catalogs(ledger).of(found.events[-1]).plan(doc["state"]["plan"])
        plan_name = plan.name if plan else doc["state"]["plan"]
    return {"workspace": workspace, "at": at, "doc": doc, "plan_name": plan_name}
