"""Who may read what over HTTP (docs/http.md, Authorization). Checked as dependencies, so a
refused caller is answered 401/403 before its input is even validated, and learns nothing.

- `admin`, `billing_admin`, `member`: their own workspace; another workspace is 403.
- `support`, `service`: every workspace, and the ledger-wide reads (workspaces, trial balance).
- `operator`: no reads at all (403); it manages tokens.
- explain and as-of: `support`, and `admin`/`billing_admin` of their own workspace (what they
  show, those can already read as invoices and audit trail; a member cannot);
- what-if (re-pricing under another catalog or policy): `support` only.

An invoice is addressed by id alone, so a caller who may read some workspaces but not the
invoice's is told 404, exactly as for an invoice that does not exist: its existence is not
revealed. A workspace path is checked for access before existence: 403 whether or not the
other workspace exists, 404 only to a caller who may read it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from adapters.http.auth import Caller, require_read, require_role
from adapters.tokens import READ_ALL_ROLES, WORKSPACE_ROLES, Principal
from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.subscription.billing_events import workspace_of_invoice

REPLAY_ROLES = ("support", "admin", "billing_admin")
WHAT_IF_ROLES = ("support",)
WorkspacePath = Annotated[str, Path(description="Workspace id.", max_length=200, examples=["acme"])]
InvoicePath = Annotated[str, Path(description="Invoice id, e.g. in_acme_0002.", max_length=300,
                                  examples=["in_acme_0002"])]


def may_replay(caller: Principal, workspace: str) -> bool:
    return caller.role == "support" or (caller.role in REPLAY_ROLES and caller.workspace_id == workspace)


def readable_workspace(workspace: WorkspacePath, caller: Caller) -> str:
    require_read(caller, workspace)
    return check_workspace_id(workspace)


def replayable_workspace(workspace: WorkspacePath, caller: Caller) -> str:
    if not may_replay(caller, workspace):
        raise LedgerError("forbidden", f"a token with role {caller.role} may not replay workspace {workspace}: explain and "
                          "as-of are for support and the workspace's admins")
    return check_workspace_id(workspace)


def what_if_workspace(workspace: WorkspacePath, caller: Caller) -> str:
    require_role(caller, *WHAT_IF_ROLES)
    return check_workspace_id(workspace)


def ledger_reader(caller: Caller) -> Principal:
    require_role(caller, *sorted(READ_ALL_ROLES))
    return caller


def books_scope(caller: Caller, workspace: Annotated[str | None, Query(max_length=200, description=(
        "One workspace only (default: all workspaces, for support and service)."))] = None) -> str | None:
    """The trial balance of every workspace is for the ledger-wide roles; one workspace's, for
    whoever may read that workspace."""
    if workspace is None:
        require_role(caller, *sorted(READ_ALL_ROLES))
        return None
    return readable_workspace(workspace, caller)


def _invoice(invoice_id: str, caller: Principal) -> str:
    if caller.role not in WORKSPACE_ROLES | READ_ALL_ROLES:
        raise LedgerError("forbidden", f"a token with role {caller.role} reads no invoices")
    workspace = workspace_of_invoice(invoice_id)
    if workspace is None or not caller.reads(workspace):
        raise LedgerError("not_found", f"no invoice {invoice_id[:100]}")
    return workspace


def readable_invoice(invoice_id: InvoicePath, caller: Caller) -> str:
    """The invoice's workspace, if the caller may read it (else 404 as if there were none)."""
    return _invoice(invoice_id, caller)


def explainable_invoice(invoice_id: InvoicePath, caller: Caller) -> str:
    workspace = _invoice(invoice_id, caller)
    if not may_replay(caller, workspace):
        raise LedgerError("forbidden", f"a token with role {caller.role} may not explain invoices: explain is for support "
                          "and the workspace's admins")
    return workspace


ReadableWorkspace = Annotated[str, Depends(readable_workspace)]
ReplayableWorkspace = Annotated[str, Depends(replayable_workspace)]
WhatIfWorkspace = Annotated[str, Depends(what_if_workspace)]
LedgerReader = Annotated[Principal, Depends(ledger_reader)]
BooksScope = Annotated[str | None, Depends(books_scope)]
ReadableInvoice = Annotated[str, Depends(readable_invoice)]
ExplainableInvoice = Annotated[str, Depends(explainable_invoice)]
