"""Signing in and out: the token goes into an HttpOnly, SameSite=Strict cookie that the console
and the API both read (adapters/http/auth.py). These two POSTs record nothing in the ledger;
they are the console's only POSTs (SESSION_ROUTES)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from adapters.console.web import COOKIE, HEADERS, render, signed_in
from adapters.tokens import READ_ALL_ROLES, WORKSPACE_ROLES, TokenStore

router = APIRouter()
SESSION_ROUTES = frozenset({"/console/login", "/console/logout"})
"""POST routes that take no bearer token and change only the browser's cookie."""
MAX_FORM = 4096
COOKIE_HOURS = 12


def safe_next(target: str | None) -> str | None:
    """Only a console page is a place to go back to (no open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@router.get("/login", name="console_login_form", include_in_schema=False)
def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": safe_next(next), "error": None}, caller=signed_in(request))


@router.post("/login", name="console_login", include_in_schema=False)
async def login(request: Request) -> Response:
    body = await request.body()
    form = parse_qs(body[:MAX_FORM].decode("utf-8", "replace")) if len(body) <= MAX_FORM else {}
    token = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or [""])[0]) or str(request.url_for("console_search").path)
    store: TokenStore = request.app.state.tokens
    found = store.authenticate(token) if token else None
    error = None
    if found is None:
        error, status = "That token is unknown or revoked. Paste the token `subledger tokens create` printed.", 401
    elif found.role not in READ_ALL_ROLES | WORKSPACE_ROLES:
        error, status = f"A {found.role} token reads no workspace: the console has nothing to show it.", 403
    if error:
        return render(request, "login.html", {"next": safe_next(target), "error": error}, status=status)
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, token, max_age=COOKIE_HOURS * 3600, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout", name="console_logout", include_in_schema=False)
def logout(request: Request) -> Response:
    response = RedirectResponse(str(request.url_for("console_login_form").path), status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
