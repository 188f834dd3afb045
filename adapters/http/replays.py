"""Replay over HTTP (docs/replay.md): explain an invoice, a workspace as of an instant, and
what-if re-pricing. They read the events, not the read models, through the same functions as
`subledger replay`; nothing is recorded. Who may run them: adapters/http/access.py."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from adapters.http.access import ExplainableInvoice, ReplayableWorkspace, WhatIfWorkspace
from adapters.http.json_bodies import CallerFirst
from adapters.http.read_side import Events
from adapters.http.reads import InstantQuery, jsonable
from adapters.http.problems import documented, reworded
from adapters.instants import given_instant
from domain.errors import LedgerError
from domain.ledger import Ledger
from replay import explain_format
from replay.as_of import as_of as find_as_of, document
from replay.explain import explain as explain_invoice
from replay.what_if import Pricing, parse_policy, what_if as reprice, write_csv

router = APIRouter(prefix="/v1", tags=["replay"], route_class=CallerFirst,
                   responses=documented(400, 401, 403, 404, 409, 503))


def as_query(message: str) -> str:
    """Replay's refusals name command-line flags (`--line: ...`); over HTTP they are query fields."""
    if not message.startswith("--"):
        return message
    flag, sep, rest = message[2:].partition(":")
    return flag.replace("-", "_") + sep + rest


def known(ledger: Ledger, workspace: str) -> None:
    if workspace not in ledger.workspaces():
        raise LedgerError("not_found", f"{workspace}: no such workspace")


@router.get("/invoices/{invoice_id}/explain", responses={200: {"content": {
    "application/json": {}, "text/markdown": {}, "text/plain": {}}}})
def explain(invoice_id: str, workspace: ExplainableInvoice, ledger: Events,
            line: Annotated[int | None, Query(ge=1, le=10_000, description="Only this line (1-based).")] = None,
            format: Annotated[Literal["json", "md", "text"], Query(  # noqa: A002 (the query's name)
                description="json (default), md (a support reply) or text.")] = "json") -> Any:
    """Why an invoice says what it says: each line's recorded arithmetic, the events and command
    that produced it, the catalog version, hash and prices, and the rule ids."""
    known(ledger, workspace)
    with reworded(as_query):
        doc = explain_invoice(ledger, invoice_id, line)
    if doc["workspace"] != workspace:
        raise LedgerError("not_found", f"no invoice {invoice_id[:100]}")
    if format == "md":
        return PlainTextResponse(explain_format.markdown(doc), media_type="text/markdown; charset=utf-8")
    if format == "text":
        return PlainTextResponse(explain_format.text(doc))
    return jsonable(doc)


@router.get("/workspaces/{workspace}/as-of")
def as_of(workspace: ReplayableWorkspace, ledger: Events, at: InstantQuery = None,
          version: Annotated[int | None, Query(ge=0, le=2**62, description="The workspace after this many events.")]
          = None, recorded_before: InstantQuery = None) -> dict[str, Any]:
    """The workspace's full state at `at` (or after `version` events), from its events only;
    `recorded_before` keeps only what the ledger had recorded by then."""
    if (at is None) == (version is None):
        raise LedgerError("invalid_request", "give one of at or version")
    with reworded(as_query):
        found = find_as_of(ledger, workspace, at=given_instant(at, "at"), version=version,
                           recorded_before=given_instant(recorded_before, "recorded_before"))
        return jsonable(document(ledger, found))


class WhatIf(BaseModel):
    """The other pricing: a catalog the ledger knows and/or policy overrides, over [from, to)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    catalog: str | None = Field(None, max_length=100, description="A catalog id the ledger knows, e.g. forms "
                                "(default: the one each event recorded).")
    policy: dict[str, Any] = Field(default_factory=dict, description="Policy overrides, e.g. "
                                   '{"proration": "none"} (the keys of a catalog\'s [policy]).')
    start: str | None = Field(None, alias="from", max_length=64, description="Re-price from this instant on.")
    end: str | None = Field(None, alias="to", max_length=64,
                            description="Leave out what was recorded from this instant on.")


@router.post("/workspaces/{workspace}/what-if", responses={200: {"content": {"application/json": {},
                                                                             "text/csv": {}}}})
def what_if(workspace: WhatIfWorkspace, body: WhatIf, ledger: Events,
            format: Annotated[Literal["json", "csv"], Query(  # noqa: A002 (the query's name)
                description="json (default) or csv (one row per invoice compared).")] = "json") -> Any:
    """Re-price the workspace's recorded history under another catalog or policy, writing
    nothing: what would differ, invoice by invoice, and in total (support only)."""
    if body.catalog is None and not body.policy:
        raise LedgerError("invalid_request", "give catalog and/or policy: the pricing to compare with")
    other = None
    if body.catalog is not None:
        other = ledger.catalogs.get(body.catalog)
        if other is None:
            raise LedgerError("invalid_request", f"catalog: unknown catalog {body.catalog!r}; known: "
                              f"{', '.join(sorted(ledger.catalogs))}")
    with reworded(as_query):
        policy = parse_policy(f"{key}={json.dumps(value)}" for key, value in body.policy.items())
        pricing = Pricing(other, policy, given_instant(body.start, "from"), given_instant(body.end, "to"))
        known(ledger, workspace)
        report = reprice(ledger, pricing, [workspace])
    if format == "csv":
        out = io.StringIO()
        write_csv(out, report)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return jsonable(report)
