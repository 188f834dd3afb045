"""The authorization matrix: every route of the app x every role x own/other workspace.

Routes are found by walking the app, so routes added later (commands, previews, quotes, the
Stripe webhook, console pages) are covered as soon as they exist: each must match a kind of
KINDS or be listed in PUBLIC, else test_every_route_is_classified fails. EXPECT gives, per
kind, what each caller gets: `ok` (anything but 401/403, never 500), 401, 403, or 404 (an
invoice of a workspace the caller may not read is hidden as not found). A refused write
records nothing: the ledger's event count is unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.http_support import OTHER, OWN, ROLES, bearer, client, copy_db, demo_db, tokens

PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("POST", "/stripe/webhook"),  # authenticated by its Stripe-Signature instead
    ("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout"),  # signing in and out
    ("GET", "/console/static/{name}"),
}
PUBLIC_MOUNTS = ("/static", "/console/static")
WS = r"/v1/workspaces/\{workspace\}"
KINDS: list[tuple[str, str, str]] = [  # (methods, path pattern, kind): the first match wins
    ("GET", r"/v1/workspaces|/v1/journal/trial-balance", "ledger"),
    ("GET", WS + r"/as-of", "replay"),
    ("POST", WS + r"/what-if", "what_if"),
    ("GET", WS + r"(/.+)?", "read"),
    ("POST", WS + r"/preview/.+", "preview"),
    ("POST", WS + r"/set-contract", "contract"),  # sales' own change (R9)
    ("POST|PUT|PATCH|DELETE", WS + r"/.+", "change"),  # the commands
    ("GET", r"/v1/test-clock", "clock"),
    ("POST", r"/v1/test-clock/advance", "clock_advance"),
    ("GET", r"/v1/invoices/\{invoice_id\}", "invoice"),
    ("GET", r"/v1/invoices/\{invoice_id\}/explain", "explain"),
    ("GET|POST|PUT|PATCH|DELETE", r"/v1/(tokens|webhooks)(/.*)?", "operator"),  # tokens, outbound webhooks
    ("GET", r"/console/workspaces/\{workspace\}/(invoices/.+|as-of)", "console_replay"),  # explain, as-of
    ("GET", r"/console/workspaces/\{workspace\}/what-if", "console_what_if"),
    ("GET", r"/console/.*\{workspace\}.*", "console_read"),
    ("GET", r"/console/", "console_search"),
]
CALLERS = (*ROLES, "none", "unknown")
OK, HIDDEN = "ok", "404"


def table(own: dict[str, str], other: dict[str, str]) -> dict[tuple[str, str], str]:
    out = {(caller, "own"): own.get(caller, "403") for caller in CALLERS}
    out |= {(caller, "other"): other.get(caller, "403") for caller in CALLERS}
    return out | {(c, side): "401" for c in ("none", "unknown") for side in ("own", "other")}


READ_ALL = {"support": OK, "service": OK}
EXPECT: dict[str, dict[tuple[str, str], str]] = {
    "read": table({"admin": OK, "billing_admin": OK, "member": OK, **READ_ALL}, READ_ALL),
    "ledger": table(READ_ALL, READ_ALL),
    "replay": table({"admin": OK, "billing_admin": OK, "support": OK}, {"support": OK}),
    "what_if": table({"support": OK}, {"support": OK}),
    "change": table({"admin": OK, "billing_admin": OK}, {}),
    "contract": table({"admin": OK, "billing_admin": OK, "sales": OK}, {"sales": OK}),  # the domain refuses admins
    "preview": table({"admin": OK, "billing_admin": OK, "support": OK}, {"support": OK}),
    "clock": table({r: OK for r in ROLES}, {r: OK for r in ROLES}),
    "clock_advance": table({"operator": OK}, {"operator": OK}),
    "invoice": table({"admin": OK, "billing_admin": OK, "member": OK, **READ_ALL},
                     {"admin": HIDDEN, "billing_admin": HIDDEN, "member": HIDDEN, **READ_ALL}),
    "explain": table({"admin": OK, "billing_admin": OK, "support": OK},
                     {"admin": HIDDEN, "billing_admin": HIDDEN, "member": HIDDEN, "support": OK}),
    "operator": table({"operator": OK}, {"operator": OK}),
    "console_replay": table({"admin": OK, "billing_admin": OK, "support": OK}, {"support": OK}),
    "console_what_if": table({"support": OK}, {"support": OK}),
    "console_read": table({"admin": OK, "billing_admin": OK, "member": OK, **READ_ALL}, READ_ALL),
    "console_search": table({r: OK for r in ROLES if r not in ("operator", "sales")},
                            {r: OK for r in ROLES if r not in ("operator", "sales")}),
}
REDIRECTS = {302, 303, 307}
"""A console page may answer a refused browser with a redirect to its login page."""


def routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, mounted routers included; a mount is ("MOUNT", path)."""
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for found in contexts:
            methods = getattr(found, "methods", None) or getattr(getattr(found, "original_route", None), "methods", None)
            if methods is None:
                yield "MOUNT", found.path
            yield from ((m, found.path) for m in sorted(methods or ()) if m != "HEAD")


def kind_of(method: str, path: str) -> str | None:
    return next((kind for methods, pattern, kind in KINDS
                 if re.fullmatch(methods, method) and re.fullmatch(pattern, path)), None)


def public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method == "MOUNT" and path.startswith(PUBLIC_MOUNTS))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    for c in client(copy_db(demo_db(tmp_path_factory), tmp_path_factory.mktemp("authz"))):
        yield c, tokens(c)


def test_every_route_is_classified_or_public(api: Any) -> None:
    c, _ = api
    found = list(routes(c.app))
    assert ("GET", "/v1/workspaces/{workspace}") in found and ("GET", "/healthz") in found
    unclassified = [(m, p) for m, p in found if not public(m, p) and kind_of(m, p) is None]
    assert unclassified == [], "add these routes to KINDS (with their EXPECT) or to PUBLIC"


def test_public_routes_answer_without_a_token(api: Any) -> None:
    c, _ = api
    for method, path in sorted(PUBLIC):
        if (method, path) in set(routes(c.app)) and method == "GET" and "oauth2" not in path and "{" not in path:
            assert c.get(path).status_code == 200, path


def request_for(method: str, path: str, kind: str, side: str) -> dict[str, Any]:
    workspace = OWN if side == "own" else OTHER
    values = {"workspace": workspace, "invoice_id": f"in_{workspace}_0001", "token_id": "tok_missing",
              "command": "change-plan"}
    url = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "x"), path)
    out: dict[str, Any] = {"method": method, "url": url, "params": {}, "headers": {"Idempotency-Key": "authz"}}
    if kind in ("replay", "console_replay"):
        out["params"]["at"] = "2026-05-01T00:00:00Z"
    if kind == "ledger" and "trial-balance" not in path:
        out["params"]["limit"] = 1
    if method in ("POST", "PUT", "PATCH"):
        out["json"] = {"what_if": {"policy": {"proration": "second"}}, "operator": {"role": "support"}}.get(kind, {})
    return out


def test_every_route_by_every_role_on_own_and_other_workspaces(api: Any) -> None:
    c, secrets = api
    ledger = c.app.state.ledger  # type: ignore[attr-defined]
    failures, covered = [], set()
    for method, path in routes(c.app):
        kind = kind_of(method, path)
        if method == "MOUNT" or kind is None or public(method, path):
            continue
        covered.add(kind)
        for (caller, side), expected in EXPECT[kind].items():
            request = request_for(method, path, kind, side)
            if caller != "none":
                request["headers"] |= bearer(secrets.get(caller, "sl_unknown-token"))
            before = ledger.recorder.max_notification_id()
            got = c.request(**request, follow_redirects=False)
            refused_ok = kind.startswith("console") and got.status_code in REDIRECTS and expected in ("401", "403")
            if got.status_code == 500 or not refused_ok and (
                    (expected == OK and got.status_code in (401, 403)) or
                    (expected != OK and str(got.status_code) != expected)):
                failures.append(f"{method} {request['url']} as {caller} ({side}): {got.status_code}, expected {expected}")
            elif expected != OK and got.status_code < 500:
                if not kind.startswith("console"):
                    assert got.headers["content-type"] == "application/problem+json", request
                if ledger.recorder.max_notification_id() != before:
                    failures.append(f"{method} {request['url']} as {caller} ({side}): refused, yet recorded events")
    assert failures == []
    assert covered >= {"read", "ledger", "replay", "what_if", "invoice", "explain", "operator", "console_replay",
                       "console_what_if"}


def test_a_malformed_body_is_refused_401_or_403_first_as_a_well_formed_one_is(api: Any) -> None:
    """FastAPI parses a JSON body before it checks the token: a body that was not JSON at all
    got 400 from callers without a token or outside the workspace."""
    c, secrets = api
    failures, posts = [], 0
    for method, path in routes(c.app):
        kind = kind_of(method, path)
        if method != "POST" or kind is None or public(method, path) or kind.startswith("console"):
            continue
        posts += 1
        for (caller, side), expected in EXPECT[kind].items():
            request = request_for(method, path, kind, side)
            del request["json"]
            request["content"] = b'{"seats": '
            request["headers"] |= {"Content-Type": "application/json"}
            if caller != "none":
                request["headers"] |= bearer(secrets.get(caller, "sl_unknown-token"))
            got = c.request(**request)
            takes_body = any(getattr(r, "path", None) == path and getattr(r, "body_field", None) for r in c.app.routes)
            wanted = int(expected) if expected != OK else 400 if takes_body else got.status_code
            if got.status_code != wanted or wanted == 400 and "the body is not valid JSON" not in got.json()["detail"]:
                failures.append(f"POST {request['url']} as {caller} ({side}): {got.status_code} {got.text[:120]}")
    assert posts > 20 and failures == []
