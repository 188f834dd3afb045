"""Signing in and out: the token goes into an HttpOnly, SameSite=Strict cookie that the console
and the API both read (adapters/http/auth.py). These two POSTs record nothing in the ledger;
they are the console's only POSTs (SESSION_ROUTES).

The sign-in form carries a token against login CSRF (another site posting its own API token to
sign the browser in as someone else): serving the form sets a random value in a SameSite=Strict
cookie sent only to the sign-in route, and the same value in a hidden field; a sign-in whose
field and cookie differ (compared in constant time) is refused 403 and sets nothing. Another
site can make the browser post, but cannot read the cookie nor make the browser send it.

Sign-out is protected the same way against a forged sign-out (another site's page posting to
it: the browser withholds the SameSite=Strict cookie, but would still obey a response that
clears it): every page's sign-out form carries a value tied to the session (web.py:
sign_out_check, an HMAC keyed by the session's token); a sign-out without the session cookie,
or whose value differs (compared in constant time), is refused 403 and clears nothing."""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from adapters.console.web import COOKIE, HEADERS, render, sign_out_check, signed_in
from adapters.tokens import READ_ALL_ROLES, WORKSPACE_ROLES, TokenStore

router = APIRouter()
SESSION_ROUTES = frozenset({"/console/login", "/console/logout"})
"""POST routes that take no bearer token and change only the browser's cookie."""
MAX_FORM = 4096
COOKIE_HOURS = 12
CSRF_COOKIE = "subledger_sign_in"
CSRF_FIELD = "csrf"
SIGN_OUT_FIELD = "sign_out"
"""The sign-out form's hidden field (every signed-in page's header): web.py sign_out_check."""
CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
"""secrets.token_urlsafe(32): what the sign-in cookie holds."""


def safe_next(target: str | None) -> str | None:
    """Only a console page is a place to go back to (no open redirect, no `..` out of /console,
    no control characters a browser would drop)."""
    path = unquote(target or "")
    if (path.startswith("/console/") and "\\" not in path and "//" not in path and "/../" not in path + "/"
            and path.isprintable()):
        return target
    return None


def sign_in_check(request: Request) -> str:
    """The value of the sign-in cookie, kept while it is one of ours (sign-in pages open in two
    tabs both work), else a new random one."""
    held = request.cookies.get(CSRF_COOKIE, "")
    return held if CSRF_SHAPE.fullmatch(held) else secrets.token_urlsafe(32)


def same_form(request: Request, sent: str) -> bool:
    held = request.cookies.get(CSRF_COOKIE, "")
    return bool(held and sent) and hmac.compare_digest(held.encode(), sent.encode())


@router.get("/login", name="console_login_form", include_in_schema=False)
def login_form(request: Request, next: str | None = None) -> Response:
    check = sign_in_check(request)
    response = render(request, "login.html", {"next": safe_next(next), "error": None, "csrf": check},
                      caller=signed_in(request))
    response.set_cookie(CSRF_COOKIE, check, path=request.url_for("console_login").path, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/login", name="console_login", include_in_schema=False)
async def login(request: Request) -> Response:
    form = form_of(await request.body())
    target = safe_next((form.get("next") or [""])[0]) or str(request.url_for("console_search").path)
    sent = (form.get(CSRF_FIELD) or [""])[0]
    if not same_form(request, sent):
        return render(request, "login.html", {"next": safe_next(target), "csrf": None, "error": (
            "This sign-in did not come from this console's sign-in page (or the page is out of date): "
            "open the sign-in page again and paste your token there.")}, status=403)
    token = (form.get("token") or [""])[0].strip()
    store: TokenStore = request.app.state.tokens
    found = store.authenticate(token) if token else None
    error = None
    if found is None:
        error, status = "That token is unknown or revoked. Paste the token `subledger tokens create` printed.", 401
    elif found.role not in READ_ALL_ROLES | WORKSPACE_ROLES:
        error, status = f"A {found.role} token reads no workspace: the console has nothing to show it.", 403
    if error:
        return render(request, "login.html", {"next": safe_next(target), "error": error, "csrf": sent}, status=status)
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, token, max_age=COOKIE_HOURS * 3600, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


def form_of(body: bytes) -> dict[str, list[str]]:
    """A posted form, or nothing when it is larger than any form of the console."""
    return parse_qs(body.decode("utf-8", "replace")) if len(body) <= MAX_FORM else {}


@router.post("/logout", name="console_logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    sent = (form_of(await request.body()).get(SIGN_OUT_FIELD) or [""])[0]
    session = request.cookies.get(COOKIE, "")
    if not (session and sent and hmac.compare_digest(sign_out_check(session).encode(), sent.encode())):
        message = ("This sign-out did not come from one of this console's pages (or the page is out of date): "
                   "you are still signed in. Use Sign out at the top of a console page." if session else
                   "This browser sent no console sign-in with this sign-out (it came from another site, or the "
                   "sign-in has ended): nothing was changed.")
        return render(request, "error.html", {"code": "sign_out_refused", "message": message,
                                              "title": "Sign-out refused"}, status=403, caller=signed_in(request))
    response = RedirectResponse(str(request.url_for("console_login_form").path), status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
