"""The read endpoints: a workspace's plan state, invoices with lines, upcoming invoice,
entitlements and audit trail; an invoice by id; the workspace list and the trial balance.

Each answers what the matching command-line read prints with --json (the same read-model
functions, the same documents); lists are paginated (adapters/http/pages.py). Authorization is
adapters/http/access.py; freshness and `min_position` are adapters/http/read_side.py."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from adapters.http.access import BooksScope, LedgerReader, ReadableInvoice, ReadableWorkspace
from adapters.http.pages import PageQuery, paginate
from adapters.http.read_side import Fresh
from adapters.http.problems import documented
from adapters.instants import check_window, given_instant
from adapters.read_docs import trial_balance_document
from domain.errors import LedgerError
from projections import audit_trail
from projections.entitlements import read_entitlements
from projections.invoices import invoices_of
from projections.plan_state import read_plan_state, read_plan_states
from projections.runner import Projections
from projections.store import dumps
from projections.upcoming_invoice import upcoming_of

router = APIRouter(prefix="/v1", tags=["reads"], responses=documented(400, 401, 403, 404, 503))
InstantQuery = Annotated[str | None, Query(max_length=64, description="ISO-8601 instant (UTC unless an offset is "
                                                                      "given), e.g. 2026-04-01T00:00:00Z.",
                                             examples=["2026-04-15T00:00:00Z"])]


def jsonable(value: Any) -> Any:
    """The document exactly as the command line prints it with --json."""
    return json.loads(dumps(value))


def existing(projections: Projections, workspace: str) -> dict[str, Any]:
    """The workspace's plan state, or 404."""
    with projections.engine.connect() as conn:
        state = read_plan_state(conn, workspace)
    if state is None:
        raise LedgerError("not_found", f"{workspace}: no such workspace")
    return state


@router.get("/workspaces")
def list_workspaces(caller: LedgerReader, projections: Fresh, chosen: PageQuery) -> dict[str, Any]:
    """Every workspace's plan state, by workspace id (support and service)."""
    with projections.engine.connect() as conn:
        states = read_plan_states(conn)
    return jsonable(paginate(states, lambda s: s["workspace"], chosen))


@router.get("/workspaces/{workspace}")
def plan_state(workspace: ReadableWorkspace, projections: Fresh) -> dict[str, Any]:
    """The workspace's plan, period, seats, credits, balances and open invoices (`subledger show`)."""
    return jsonable(existing(projections, workspace))


@router.get("/workspaces/{workspace}/invoices")
def invoices(workspace: ReadableWorkspace, projections: Fresh, chosen: PageQuery) -> dict[str, Any]:
    """The workspace's invoices, oldest first, each with its lines (their arithmetic) and payments."""
    existing(projections, workspace)
    with projections.engine.connect() as conn:
        found = invoices_of(conn, workspace)
    return jsonable(paginate(found, lambda i: i["invoice_id"], chosen))


@router.get("/workspaces/{workspace}/upcoming-invoice")
def upcoming_invoice(workspace: ReadableWorkspace, projections: Fresh) -> dict[str, Any]:
    """The renewal invoice as it would be issued at the period end (`upcoming` is null when none is due)."""
    existing(projections, workspace)
    with projections.engine.connect() as conn:
        return jsonable({"workspace": workspace, "upcoming": upcoming_of(conn, workspace)})


@router.get("/workspaces/{workspace}/entitlements")
def entitlements(workspace: ReadableWorkspace, projections: Fresh) -> dict[str, Any]:
    """Features, limits, usage, read-only storage and webhooks (`subledger entitlements`)."""
    with projections.engine.connect() as conn:
        found = read_entitlements(conn, workspace)
    if found is None:
        raise LedgerError("not_found", f"{workspace}: no such workspace")
    return jsonable(found)


@router.get("/workspaces/{workspace}/audit", responses={200: {"content": {
    "application/json": {}, "text/csv": {}, "application/x-ndjson": {}}}})
def audit(workspace: ReadableWorkspace, projections: Fresh, chosen: PageQuery,
          since: InstantQuery = None, until: InstantQuery = None,
          format: Annotated[Literal["json", "csv", "jsonl"], Query(description=(  # noqa: A002 (the query's name)
              "json: a page of rows; csv or jsonl: the whole trail in [since, until), streamed"))] = "json") -> Any:
    """The workspace's audit trail in position order, from `since` (inclusive) to `until`
    (exclusive): a page as JSON (cursor: a row's `position`), or the export `subledger audit
    --format csv|jsonl` writes, streamed."""
    start, end = given_instant(since, "since"), given_instant(until, "until")
    check_window(start, end, ("since", "until"))
    existing(projections, workspace)
    if format == "json":
        with projections.engine.connect() as conn:
            rows = (audit_trail.exported(r) for r in audit_trail.rows(conn, workspace, start, end))
            return jsonable(paginate(rows, lambda r: str(r["position"]), chosen))
    lines = audit_trail.csv_lines if format == "csv" else audit_trail.jsonl_lines

    export = lines(audit_trail.paged(projections.engine, workspace, start, end))
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    name = f"audit-{workspace}.{format}"
    return StreamingResponse(export, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/invoices/{invoice_id}")
def invoice(invoice_id: str, workspace: ReadableInvoice, projections: Fresh) -> dict[str, Any]:
    """One invoice with its lines and payments. 404 also when the caller may not read its workspace."""
    with projections.engine.connect() as conn:
        found = next((i for i in invoices_of(conn, workspace) if i["invoice_id"] == invoice_id), None)
    if found is None:
        raise LedgerError("not_found", f"no invoice {invoice_id[:100]}")
    return jsonable(found)


@router.get("/journal/trial-balance")
def trial_balance(workspace: BooksScope, projections: Fresh, at: InstantQuery = None) -> dict[str, Any]:
    """The journal's trial balance per currency as of `at` (inclusive; default now): each
    account's balance (debits positive, credits negative); each total is zero (`subledger books`)."""
    when = given_instant(at, "at")
    if workspace is not None:
        existing(projections, workspace)
    with projections.engine.connect() as conn:
        return jsonable(trial_balance_document(conn, workspace, when))
