"""The support console in-process (no browser): who may sign in and read what, and that a
support token changes nothing through any write route of the app, the console's or the API's.
The browser walk-through is tests/test_console_e2e.py."""

from __future__ import annotations

import json
import re
from html import unescape
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, routing
from fastapi.testclient import TestClient

from adapters.console.session import SESSION_ROUTES
from adapters.console.web import COOKIE, sign_out_check
from adapters.demo import demo_file
from adapters.http.app import create_app
from adapters.http.auth import Caller, principal, require_change
from adapters.scenario import run_scenario
from domain.commands import COMMANDS, parse_command
from domain.ledger import TestClock
from tests.conftest import fresh_postgres_schema, utc

DEMO_END = utc("2026-06-10T00:00:00")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SUPPORT_QUESTIONS = re.compile(r"/(what-if|preview(/[^/]+)?)$")
"""POSTs that ask and record nothing, which support may ask (docs/http.md): they need not be refused."""
EXTRA_BODIES = {"subscribe": {"plan": "team"}, "change-plan": {"plan": "team"}, "set-seats": {"seats": 5},
                "set-members": {"members": 2}, "report-storage": {"gb": "1"}, "set-storage-addon": {"addon": None},
                "buy-ai-credits": {"pack": "ai-1000"}, "consume-ai-credits": {"credits": 1},
                "record-usage": {"operations": 1}, "buy-operations": {"operations": 10000},
                "add-payment-method": {"payment_method": "pm_card_visa"},
                "remove-payment-method": {"payment_method": "pm_card_visa"}, "pay-invoice": {},
                "set-contract": {"contract": "enterprise"}}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'demo.db'}"
    outputs, code = run_scenario(demo_file(), url)
    assert code == 0, [o["expect_failures"] for o in outputs if o["expect_failures"]]
    return url


@pytest.fixture
def app(demo_db: str) -> Iterator[Any]:
    made = create_app(demo_db, clock=TestClock(DEMO_END))
    with TestClient(made):  # runs the lifespan, so the console's read models are closed after
        yield made


def client_as(app: Any, role: str | None, workspace: str | None = None) -> TestClient:
    client = TestClient(app)
    if role is not None:
        _, token = app.state.tokens.create(role, workspace)
        client.cookies.set(COOKIE, token)
    return client


def sign_in_form(client: TestClient) -> str:
    """Open the sign-in page, as a browser does first: its hidden CSRF field's value."""
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
    assert found
    return found.group(1)


def sign_in(client: TestClient, token: str, next_page: str = "", csrf: str | None = None) -> Any:
    check = sign_in_form(client) if csrf is None else csrf
    body = f"token={token}&csrf={check}" + (f"&next={next_page}" if next_page else "")
    return client.post("/console/login", content=body, follow_redirects=False,
                       headers={"content-type": "application/x-www-form-urlencoded"})


def sign_out(client: TestClient, check: str | None = None) -> Any:
    """Sign out as the Sign out button of a console page does: with the page's hidden value."""
    if check is None:
        found = re.search(r'name="sign_out" value="([^"]+)"', client.get("/console/").text)
        assert found
        check = found.group(1)
    return client.post("/console/logout", content=f"sign_out={check}", follow_redirects=False,
                       headers={"content-type": "application/x-www-form-urlencoded"})


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page)))


def test_sign_in_keeps_the_token_in_an_http_only_strict_cookie_and_sign_out_clears_it(app: Any) -> None:
    _, token = app.state.tokens.create("support")
    client = TestClient(app)
    assert client.get("/console/workspaces/acme", follow_redirects=False).headers["location"] == \
        "/console/login?next=/console/workspaces/acme"
    signed = sign_in(client, token, "/console/workspaces/acme")
    assert signed.status_code == 303 and signed.headers["location"] == "/console/workspaces/acme"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/console/workspaces/acme").status_code == 200
    out = sign_out(client)
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_refuses_unknown_tokens_and_operator_tokens_and_goes_back_only_to_console_pages(app: Any) -> None:
    client = TestClient(app)
    refused = sign_in(client, "sl_not-a-token")
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    _, operator = app.state.tokens.create("operator")
    assert sign_in(client, operator).status_code == 403
    _, token = app.state.tokens.create("service")
    assert sign_in(client, token, "https://evil.example/").headers["location"] == "/console/"
    assert sign_in(client, token, "//evil.example/console/").headers["location"] == "/console/"
    for elsewhere in ("/console/../v1/workspaces", "/console/%2e%2e/v1", "/console//evil.example", "/console/%09/x"):
        assert sign_in(client, token, elsewhere).headers["location"] == "/console/", elsewhere
    assert sign_in(client, token, "/console/workspaces/acme?kind=x").headers["location"] == "/console/workspaces/acme?kind=x"


def test_a_sign_in_posted_from_another_site_is_refused_403_and_signs_nobody_in(app: Any) -> None:
    """Login CSRF: another site's form can post its own token, but cannot send this site's
    SameSite=Strict sign-in cookie nor know the value the sign-in page put in its hidden field."""
    _, attackers = app.state.tokens.create("support")
    outside = TestClient(app)  # the victim's browser, never on the sign-in page
    refused = sign_in(outside, attackers, csrf="forged")
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert "did not come from this console's sign-in page" in text_of(refused.text)
    assert outside.get("/console/", follow_redirects=False).status_code == 303  # still signed out
    browser = TestClient(app)
    form = browser.get("/console/login")
    check = form.cookies["subledger_sign_in"]
    assert f'name="csrf" value="{check}"' in form.text
    assert "HttpOnly" in form.headers["set-cookie"] and "SameSite=strict" in form.headers["set-cookie"]
    assert sign_in(browser, attackers, csrf=check[:-1] + ("A" if check[-1] != "A" else "B")).status_code == 403
    assert sign_in(browser, attackers, csrf=check).status_code == 303


def test_a_sign_out_posted_from_another_site_is_refused_403_and_the_session_stays(app: Any) -> None:
    """Sign-out CSRF: another site's form can make the browser post to sign-out; the browser
    withholds the SameSite=Strict cookie, and the value of the page's hidden field is an HMAC
    keyed by the session's token, which that site cannot know."""
    _, token = app.state.tokens.create("support")
    _, other = app.state.tokens.create("support")
    browser = TestClient(app)
    assert sign_in(browser, token).status_code == 303
    page = browser.get("/console/")
    check = re.search(r'name="sign_out" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert check == sign_out_check(token) and token not in page.text
    cross_site = TestClient(app)  # what the browser sends for another site's form: no cookie
    for forged in (cross_site.post("/console/logout", follow_redirects=False),
                   sign_out(cross_site, check),
                   browser.post("/console/logout", follow_redirects=False),
                   sign_out(browser, "forged"),
                   sign_out(browser, check[:-1] + ("A" if check[-1] != "A" else "B")),
                   sign_out(browser, sign_out_check(other))):
        assert forged.status_code == 403 and "set-cookie" not in forged.headers, forged.text[:300]
    assert "did not come from one of this console's pages" in text_of(sign_out(browser, "forged").text)
    assert browser.get("/console/").status_code == 200  # still signed in
    real = sign_out(browser)
    assert real.status_code == 303 and f'{COOKIE}=""' in real.headers["set-cookie"]
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_support_and_service_read_every_workspace(app: Any) -> None:
    for role in ("support", "service"):
        client = client_as(app, role)
        found = text_of(client.get("/console/").text)
        assert all(ws in found for ws in ("acme", "beta", "studio", "flowops"))
        for ws in ("acme", "beta"):
            assert client.get(f"/console/workspaces/{ws}").status_code == 200


def test_workspace_roles_read_only_their_own_workspace_and_operators_nothing(app: Any) -> None:
    for role in ("admin", "billing_admin", "member"):
        client = client_as(app, role, "acme")
        found = text_of(client.get("/console/").text)
        assert "acme" in found and "beta" not in found
        assert client.get("/console/workspaces/acme").status_code == 200
        for page in ("/console/workspaces/beta", "/console/workspaces/beta/invoices/in_beta_0001",
                     "/console/workspaces/beta/as-of?at=2026-05-01T00:00", "/console/workspaces/beta/what-if"):
            assert client.get(page).status_code == 403, (role, page)
    operator = client_as(app, "operator")
    assert operator.get("/console/").status_code == 403
    assert operator.get("/console/workspaces/acme").status_code == 403


def test_explain_as_of_and_what_if_pages_are_for_whom_the_api_gives_them(app: Any) -> None:
    """docs/http.md's matrix: explain and as-of for support and the workspace's admins, what-if
    for support; a member or service token reads the workspace but gets 403 there, and no link."""
    pages = {"explain": "/console/workspaces/acme/invoices/in_acme_0002",
             "as_of": "/console/workspaces/acme/as-of?at=2026-04-05T00:00", "what_if": "/console/workspaces/acme/what-if"}
    allowed = {"admin": {"explain", "as_of"}, "billing_admin": {"explain", "as_of"}, "member": set(),
               "service": set(), "support": {"explain", "as_of", "what_if"}}
    for role, may in allowed.items():
        client = client_as(app, role, "acme" if role in ("admin", "billing_admin", "member") else None)
        for name, page in pages.items():
            assert client.get(page).status_code == (200 if name in may else 403), (role, name)
        workspace = client.get("/console/workspaces/acme").text
        assert ("/console/workspaces/acme/invoices/" in workspace) == ("explain" in may), role
        assert ("/console/workspaces/acme/what-if" in workspace) == ("what_if" in may), role


def test_the_upgrade_invoice_shows_each_line_with_its_arithmetic_rules_and_the_markdown_reply(app: Any) -> None:
    page = client_as(app, "support").get("/console/workspaces/acme/invoices/in_acme_0002")
    assert page.status_code == 200
    found = text_of(page.text)
    assert "-12.67 19.00 x 1 x 20/30 days = 12.666667 -> 12.67 R13" in found
    assert "32.67 49.00 x 1 x 20/30 days = 32.666667 -> 32.67 R11, R13" in found
    assert "Subtotal 20.00 -12.67 + 32.67 = 20.00" in found and "Due 20.00 USD" in found
    assert "forms@2026-11-23" in found and "Pro per month: 19.00" in found and "Team per month: 49.00" in found
    assert "| **Due** | **20.00** |" in page.text


def test_R12_the_declined_upgrade_is_listed_void_and_its_page_explains_its_lines_and_the_decline(app: Any) -> None:
    """Never issued, but support is asked about it: its page shows the lines its charge request
    held, with their arithmetic, and says it is void because the card was declined."""
    client = client_as(app, "support")
    void = next(i for i in client.get("/v1/workspaces/beta/invoices").json()["data"] if i["status"] == "void")
    found = text_of(client.get("/console/workspaces/beta").text)
    assert f"{void['invoice_id']} upgrade void requested 2026-04-21" in found
    assert f"declined {void['amount_due']} (card_declined)" in found
    assert [line["kind"] for line in void["lines"]] == ["plan_credit", "plan_charge"] and void["amount_paid"] == "0.00"
    page = client.get(f"/console/workspaces/beta/invoices/{void['invoice_id']}")
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "requested 2026-04-21" in shown and "void" in shown
    assert "declined on 2026-04-21" in shown and "card_declined" in shown and "nothing is owed (R12)" in shown
    assert f"Would have been due (void: not owed, R12) {void['amount_due']}" in shown
    assert all(line["formula"] in shown for line in void["lines"])


def test_as_of_before_the_upgrade_shows_pro_and_after_it_team(app: Any) -> None:
    client = client_as(app, "support")
    before = text_of(client.get("/console/workspaces/acme/as-of?at=2026-04-05T00:00").text)
    after = text_of(client.get("/console/workspaces/acme/as-of?at=2026-04-15T00:00").text)
    assert "Plan Pro (monthly)" in before and "Plan Team (monthly)" in after


def test_what_if_compares_invoice_by_invoice_and_takes_only_built_in_catalogs(app: Any) -> None:
    client = client_as(app, "support")
    found = text_of(client.get("/console/workspaces/acme/what-if?upgrade_new_cycle=true").text)
    assert "in_acme_0002 2026-04-11 upgrade changed 20.00 36.33 16.33" in found
    assert client.get("/console/workspaces/acme/what-if?catalog=/etc/passwd").status_code == 400
    assert client.get("/console/workspaces/acme/what-if?proration=hourly").status_code == 400
    beyond = client.get("/console/workspaces/acme/what-if?downgrade_notice_days=61")
    assert beyond.status_code == 400
    assert "downgrade_notice_days: " in text_of(beyond.text) and "--policy" not in beyond.text


def test_the_workspace_page_shows_the_timeline_chain_status_and_balances(app: Any) -> None:
    client = client_as(app, "support")
    page = client.get("/console/workspaces/studio")
    found = text_of(page.text)
    assert "Intact:" in found and "audit rows agree" in found
    assert "sam (owner)" in found and "plan : trial → team" in found
    assert page.text.count("<svg") == 2
    only = text_of(client.get("/console/workspaces/studio?kind=InvoiceIssued").text)
    rows = only.split("Before → after Money")[-1]
    assert "SeatsChanged" not in rows and "InvoiceIssued" in rows


@pytest.mark.postgres
def test_every_page_reads_the_same_on_postgresql(tmp_path: Any) -> None:
    demo = json.loads(demo_file().read_text())
    demo["workspaces"] = {"acme": demo["workspaces"]["acme"]}
    demo["steps"] = [step for step in demo["steps"] if step.get("workspace") == "acme"]
    (tmp_path / "acme.json").write_text(json.dumps(demo))  # the seed 003 story alone: lean on PostgreSQL
    for url in fresh_postgres_schema():
        outputs, code = run_scenario(tmp_path / "acme.json", url)
        assert code == 0, [o["expect_failures"] for o in outputs if o["expect_failures"]]
        made = create_app(url, clock=TestClock(DEMO_END))
        with TestClient(made) as client:
            _, token = made.state.tokens.create("support")
            client.cookies.set(COOKIE, token)
            assert [r for r in text_of(client.get("/console/?q=a_").text).split() if r == "acme"] == []
            assert "acme" in text_of(client.get("/console/?q=ac").text)
            for page in ("/console/workspaces/acme", "/console/workspaces/acme/as-of?at=2026-04-05T00:00",
                         "/console/workspaces/acme/what-if?upgrade_new_cycle=true"):
                assert client.get(page).status_code == 200, page
            found = text_of(client.get("/console/workspaces/acme/invoices/in_acme_0002").text)
            assert "Subtotal 20.00 -12.67 + 32.67 = 20.00" in found


def write_routes(app: Any) -> list[Any]:
    """Every route of the app that takes a write method, through included routers (FastAPI 0.16x
    keeps those lazily: iter_route_contexts flattens them; older versions list them flat)."""
    flatten = getattr(routing, "iter_route_contexts", None)
    found = flatten(app.routes) if flatten else app.routes
    return [r for r in found if (r.methods or set()) & WRITE_METHODS and getattr(r, "dependant", None) is not None]


def guarded(route: Any) -> bool:
    """Whether the route authenticates its caller with the API token (adapters/http/auth.py)."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is principal:
            return True
        pending.extend(dependant.dependencies)
    return False


def demo_bodies() -> dict[str, dict[str, Any]]:
    bodies = dict(EXTRA_BODIES)
    for step in json.loads(demo_file().read_text())["steps"]:
        if step["do"] in COMMANDS:
            bodies[step["do"]] = step.get("with", {})
    for name, body in bodies.items():
        parse_command(name, body)  # a valid body, so only the token can be why it is refused
    return bodies


def requests_for(route: Any, bodies: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The route's path filled in (every command for a {command} parameter) and a valid body."""
    names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
    commands = list(COMMANDS) if "command" in names else [None]
    for command in commands:
        path = route.path
        for name in names:
            value = {"workspace": "acme", "command": command, "invoice_id": "in_acme_0002",
                     "invoice": "in_acme_0002"}.get(name) or "x"
            path = re.sub(r"{%s(?::\w+)?}" % name, str(value), path)
        yield path, bodies.get(command or route.path.rsplit("/", 1)[-1], {})


def recorded(app: Any) -> tuple[Any, ...]:
    ledger = app.state.ledger
    return (ledger.recorder.max_notification_id(), tuple(e.originator_version for ws in ledger.workspaces()
                                                         for e in ledger.workspace_events(ws)[-1:]))


def test_a_support_token_cannot_change_anything_through_the_console_or_the_api(app: Any) -> None:
    """Every write route of the app, whoever added it: a support token is refused wherever a
    token is asked for (403 as a bearer header, 401 as the console's cookie), and nothing is recorded.
    The console's own routes are GETs but for signing in and out."""
    console_writes = {r.path for r in write_routes(app) if r.path.startswith("/console")}
    assert console_writes == SESSION_ROUTES
    assert_support_changes_nothing(app)


def test_the_console_cookie_of_an_admin_reads_the_api_but_writes_nothing(app: Any) -> None:
    """A signed-in admin's cookie would otherwise let any page the browser opens post commands."""
    _, token = app.state.tokens.create("admin", "acme")
    client = TestClient(app, cookies={COOKIE: token})
    before = recorded(app)
    assert client.get("/v1/workspaces/acme").status_code == 200
    for path in ("/v1/workspaces/acme/cancel", "/v1/workspaces/acme/cancel-change", "/v1/workspaces/acme/pay-invoice"):
        refused = client.post(path)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated", path
    assert recorded(app) == before
    assert client.post("/v1/workspaces/acme/cancel", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_write_route_check_covers_api_routes_added_beside_the_console(app: Any) -> None:
    """The check above finds a token-guarded command route however it is mounted."""
    api = APIRouter()

    @api.post("/v1/workspaces/{workspace}/{command}")
    def command(workspace: str, command: str, body: dict[str, Any], caller: Caller) -> dict[str, str]:
        require_change(caller, workspace)
        raise AssertionError("a support token got past require_change")

    app.include_router(api)
    tried = assert_support_changes_nothing(app)
    assert tried >= 2 * (len(SESSION_ROUTES) + len(COMMANDS))


def assert_support_changes_nothing(app: Any) -> int:
    _, token = app.state.tokens.create("support")
    bodies = demo_bodies()
    before = recorded(app)
    tried = 0
    for route in write_routes(app):
        for path, body in requests_for(route, bodies):
            for method in sorted(route.methods & WRITE_METHODS):
                for auth in ({"headers": {"Authorization": f"Bearer {token}"}}, {"cookies": {COOKIE: token}}):
                    client = TestClient(app, cookies=auth.get("cookies"))
                    headers = {"Idempotency-Key": f"console-support-{tried}", **auth.get("headers", {})}
                    answer = client.request(method, path, json=body, headers=headers, follow_redirects=False)
                    tried += 1
                    if SUPPORT_QUESTIONS.search(route.path):
                        assert answer.status_code != 500, (method, path, answer.text[:300])  # may answer: records nothing
                    elif guarded(route):
                        refused = 403 if "headers" in auth else 401  # the cookie is no credential for writes
                        assert answer.status_code == refused, (method, path, answer.status_code, answer.text[:300])
                    elif route.path not in SESSION_ROUTES:
                        assert answer.status_code >= 400, (method, path, answer.status_code)
                    assert recorded(app) == before, (method, path)
    return tried


def test_every_route_name_is_unique_so_console_links_reach_console_pages(app: Any) -> None:
    """`url_for` takes the first route of a name: an API route named like a console page would
    turn the console's links into API calls."""
    flatten = getattr(routing, "iter_route_contexts", None)
    names = [r.name for r in (flatten(app.routes) if flatten else app.routes) if getattr(r, "name", None)]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_search_shows_the_amount_due_to_the_currency_s_own_minor_unit(tmp_path: Any) -> None:
    """A KWD invoice of 19.125 read 19.12 in the search's Due column (two places, half to even)."""
    from pathlib import Path
    from tests.conftest import Book
    forms = (Path(__file__).parent.parent / "domain/catalogs/forms.toml").read_text()
    catalog = tmp_path / "kwd.toml"
    catalog.write_text(forms.replace('id = "forms"', 'id = "forms-kwd"').replace('currency = "USD"', 'currency = "KWD"')
                       .replace('month = "19.00"', 'month = "19.125"'))
    url = f"sqlite:///{tmp_path}/kwd.db"
    b = Book(url, str(catalog), "2026-04-01T00:00:00")
    assert b.do("k1", "add-payment-method", payment_method="pm_card_visa").ok
    assert b.do("k1", "subscribe", plan="pro", interval="month").ok
    assert b.do("k1", "add-payment-method", payment_method="pm_card_chargeDeclined").ok
    b.at("2026-05-01T01:00:00")
    b.close()
    app = create_app(url, catalog=str(catalog), clock=TestClock(utc("2026-05-01T01:00:00")))
    with TestClient(app) as c:
        headers = {"Authorization": f"Bearer {app.state.tokens.create('support')[1]}"}
        assert c.get("/v1/workspaces/k1", headers=headers).json()["open_invoices"][0]["amount_due"] == "19.125"
        assert re.findall(r'data-label="Due">(.*?)</td>', c.get("/console/?q=k1", headers=headers).text) == ["19.125"]
