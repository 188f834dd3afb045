"""The console's pages (GET only): search, workspace, invoice, as-of and what-if. Each page
reads through adapters/console/reads.py; signing in and out lives in session.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from adapters.console import reads, session
from adapters.console.chart import step_chart
from adapters.console.web import HERE, ledger_of, page, reading
from adapters.console.what_if_form import as_fields, policy_fields, pricing_of, report_for
from adapters.http.problems import reworded
from adapters.instants import check_window, given_instant
from adapters.tokens import Principal
from domain.catalog import BUILT_IN
from domain.errors import LedgerError


router = APIRouter(include_in_schema=False)
router.include_router(session.router)
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


def local(at: datetime | None) -> str:
    """An instant as a datetime-local input shows it (UTC)."""
    return at.strftime("%Y-%m-%dT%H:%M") if at else ""


@router.get("/static/{name}", name="console_static")
def static(name: str) -> Response:
    if name not in STATIC:
        raise LedgerError("not_found", "no such file")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


@router.get("/", name="console_search")
def search(request: Request, q: str = "") -> Response:
    def build(caller: Principal) -> dict[str, Any]:
        with reading(request) as conn:
            results = reads.search(conn, caller, q)
        return {"q": q, "results": results}
    return page(request, "search.html", build)


@router.get("/workspaces/{workspace}", name="console_workspace")
def workspace(request: Request, workspace: str, kind: str = "", since: str = "", until: str = "") -> Response:
    def build(caller: Principal) -> dict[str, Any]:
        ws = reads.readable(caller, workspace)
        start, end = (given_instant(since, "since", blank_is_none=True),
                      given_instant(until, "until", blank_is_none=True))
        check_window(start, end, ("since", "until"))
        with reading(request) as conn:
            found = reads.workspace_page(ledger_of(request), conn, ws, kind or None, start, end)
        points = found["balances"]
        charts = [step_chart([(p["at"], p["billing_credit"]) for p in points], "Billing credit",
                             points[0]["currency"] if points else ""),
                  step_chart([(p["at"], p["ai_credits"]) for p in points], "AI credits", "credits")]
        return {**found, "charts": [c for c in charts if c], "filters": {"kind": kind, "since": since,
                                                                          "until": until}}
    return page(request, "workspace.html", build)


@router.get("/workspaces/{workspace}/invoices/{invoice_id}", name="console_invoice")
def invoice(request: Request, workspace: str, invoice_id: str) -> Response:
    def build(caller: Principal) -> dict[str, Any]:
        ws = reads.replayable(caller, workspace)
        with reading(request) as conn:
            return reads.invoice_page(ledger_of(request), conn, ws, invoice_id)
    return page(request, "invoice.html", build)


@router.get("/workspaces/{workspace}/as-of", name="console_as_of")
def as_of(request: Request, workspace: str, at: str = "") -> Response:
    def build(caller: Principal) -> dict[str, Any]:
        ws = reads.replayable(caller, workspace)
        with reading(request) as conn:
            state = reads.state_of(conn, ws)
        found = reads.as_of_page(ledger_of(request), ws, given_instant(at, "at", blank_is_none=True))
        return {**found, "state": state, "at_value": local(found["at"])}
    return page(request, "as_of.html", build)


@router.get("/workspaces/{workspace}/what-if", name="console_what_if")
def what_if(request: Request, workspace: str, catalog: str = "", start: str = "", end: str = "") -> Response:
    def build(caller: Principal) -> dict[str, Any]:
        ws = reads.what_if_able(caller, workspace)
        with reading(request) as conn:
            state = reads.state_of(conn, ws)
        fields = policy_fields()
        chosen = {f["name"]: request.query_params.get(f["name"], "") for f in fields}
        with reworded(as_fields):
            pricing = pricing_of(catalog, chosen, given_instant(start, "from", blank_is_none=True),
                                 given_instant(end, "to", blank_is_none=True))
            report = report_for(ledger_of(request), ws, pricing) if pricing else None
        return {"workspace": ws, "state": state, "catalogs": BUILT_IN, "fields": fields, "chosen": chosen,
                "catalog": catalog, "start": start, "end": end, "report": report, "pricing": pricing}
    return page(request, "what_if.html", build)
