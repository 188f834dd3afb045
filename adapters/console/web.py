"""What every console page shares: the templates, the signed-in principal, the read models
kept for the process, error pages and the security headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Connection

from adapters.http.access import WHAT_IF_ROLES, may_replay
from adapters.http.auth import COOKIE
from adapters.http.problems import status_of, unavailable
from adapters.tokens import Principal, TokenStore
from domain.errors import LedgerError
from domain.ledger import Ledger

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(may_replay=may_replay, may_what_if=lambda caller: caller.role in WHAT_IF_ROLES)
"""Links to explain, as-of and what-if are shown only to whom the API gives them."""
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Pages show billing data: never cached, never framed, scripts only from the console itself."""
SIGN_OUT = b"subledger console sign-out"
"""What the sign-out check is a MAC of, keyed by the session's token (sign_out_check)."""


def ledger_of(request: Request) -> Ledger:
    return request.app.state.ledger


def signed_in(request: Request) -> Principal | None:
    """The principal of the console cookie (or a bearer header), None when absent or revoked."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    if not token:
        return None
    store: TokenStore = request.app.state.tokens
    return store.authenticate(token)


def sign_out_check(session: str) -> str:
    """The sign-out form's hidden value for the session whose cookie holds `session`: an HMAC
    keyed by the session's token, so it is tied to this session, needs no server-side state or
    secret shared between workers, and reveals nothing of the token. Another site can make the
    browser post to sign-out but can compute this value only by knowing the token, which the
    HttpOnly cookie keeps from every script (adapters/console/session.py: logout)."""
    mac = hmac.new(session.encode(), SIGN_OUT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@contextmanager
def reading(request: Request) -> Iterator[Connection]:
    """A connection to the read models the API reads too (adapters/http/read_side.py), caught up first."""
    projections = request.app.state.read_side.fresh(None)
    with projections.engine.connect() as conn:
        yield conn


def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
           caller: Principal | None = None) -> HTMLResponse:
    session = request.cookies.get(COOKIE) if caller else None
    shared = {"caller": caller, "sign_out": sign_out_check(session) if session else ""}
    response = templates.TemplateResponse(request, name, {**shared, **context}, status_code=status)
    response.headers.update(HEADERS)
    return response


def error_page(request: Request, error: LedgerError, caller: Principal | None) -> HTMLResponse:
    return render(request, "error.html", {"code": error.code, "message": error.message,
                                          "title": error.code.replace("_", " ").capitalize()},
                  status=status_of(error.code), caller=caller)


def page(request: Request, name: str, build: Callable[[Principal], dict[str, Any]]) -> Response:
    """A page for the signed-in reader: to the sign-in page without a live token; a LedgerError
    (forbidden, not found, bad input) becomes an error page with the API's status."""
    caller = signed_in(request)
    if caller is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{request.url_for('console_login_form').path}?next={quote(target)}", status_code=303,
                                headers=HEADERS)
    try:
        return render(request, name, build(caller), caller=caller)
    except LedgerError as e:
        return error_page(request, e, caller)
    except Exception as e:
        if (busy := unavailable(e)) is None:
            raise
        return error_page(request, busy, caller)
