"""The console end to end: `subledger serve` on a ledger `subledger demo` filled, driven by
Debian's Chromium through Playwright (never a downloaded browser). Walks the seed 003 story
(acme: Pro -> Team mid-cycle, 12.67 credit, 32.67 charge, 20.00 due) and screenshots every page
at 1280 px and on a phone into $SUBLEDGER_SCREENSHOTS (default test-artifacts/console/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stripe_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
DEMO_END = "2026-06-10T00:00:00Z"
"""The demo's last step: its ledger is kept on a test clock, so the server runs on one too."""
SEED_003 = "acme"
UPGRADE = "in_acme_0002"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


def screenshots() -> Path:
    folder = Path(os.environ.get("SUBLEDGER_SCREENSHOTS") or ROOT / "test-artifacts" / "console")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    found = Path(sys.executable).parent / "subledger"
    command = [str(found)] if found.exists() else [sys.executable, "-m", "adapters.cli"]
    done = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=os.environ | (env or {}))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`subledger serve` on the demo's ledger, and a support token for it."""
    folder = tmp_path_factory.mktemp("console-e2e")
    db = f"sqlite:///{folder / 'demo.db'}"
    cli("demo", "--db", db, cwd=folder)
    token = json.loads(cli("--db", db, "--json", "tokens", "create", "--role", "support", cwd=folder).stdout)["token"]
    port = free_port()
    found = Path(sys.executable).parent / "subledger"
    command = [str(found)] if found.exists() else [sys.executable, "-m", "adapters.cli"]
    process = subprocess.Popen([*command, "--db", db, "serve", "--port", str(port)], cwd=folder,
                               env=os.environ | {"SUBLEDGER_TEST_CLOCK": DEMO_END},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            if process.poll() is not None:
                pytest.fail(f"subledger serve exited {process.returncode}: {process.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("subledger serve did not answer /healthz within 30 s")
        yield {"base": base, "token": token}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(screenshots() / f"{name}.png"), full_page=True)


def test_support_finds_the_upgrade_explains_it_copies_the_reply_and_sees_pro_earlier(
        server: dict[str, str], browser: Browser) -> None:
    context = browser.new_context(viewport=WIDE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server["base"])
    page = context.new_page()
    try:
        page.goto(f"{server['base']}/console/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        shot(page, "login-1280")
        page.get_by_label("API token").fill(server["token"])
        page.get_by_role("button", name="Sign in").click()

        page.get_by_label("Workspace id or prefix").fill(SEED_003[:2])
        page.get_by_role("button", name="Search").click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=SEED_003, exact=True))
        expect(row).to_contain_text("pro")
        expect(row).to_contain_text("active")
        shot(page, "search-1280")
        row.get_by_role("link", name=SEED_003, exact=True).click()

        expect(page.get_by_role("heading", name=f"Workspace {SEED_003}")).to_be_visible()
        expect(page.locator("#chain-status")).to_contain_text("Intact")
        expect(page.locator("figure.chart")).to_have_count(2)
        shot(page, "workspace-1280")
        page.get_by_role("heading", name=UPGRADE).get_by_role("link", name=UPGRADE).click()

        expect(page.get_by_role("heading", name=f"Invoice {UPGRADE}")).to_be_visible()
        expect(page.locator("#line-1 .amount")).to_have_text("-12.67")
        expect(page.locator("#line-1")).to_contain_text("19.00 x 1 x 20/30 days = 12.666667 -> 12.67")
        expect(page.locator("#line-2 .amount")).to_have_text("32.67")
        expect(page.locator("#line-2")).to_contain_text("49.00 x 1 x 20/30 days = 32.666667 -> 32.67")
        expect(page.locator("tr.due")).to_contain_text("20.00")
        page.get_by_text("Explain line 1:").click()
        expect(page.locator("#explain-1")).to_contain_text("Pro per month: 19.00")
        expect(page.locator("#explain-1")).to_contain_text("forms@2026-11-23")
        page.get_by_role("button", name="Copy reply").click()
        expect(page.get_by_role("status")).to_have_text("Reply copied to the clipboard.")
        expect(page.get_by_role("button", name="Copy reply")).to_have_attribute("data-copied", "true")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == page.get_by_label("Reply (markdown)").input_value()
        assert "| 1 | Unused time on Pro (monthly) | -12.67 | 19.00 x 1 x 20/30 days" in copied
        assert "| | **Due** | **20.00** | | |" in copied
        shot(page, "invoice-1280")

        page.get_by_role("navigation", name="Console").get_by_role("link", name="As of").click()
        page.get_by_label("Date and time (UTC)").fill("2026-04-05T00:00")
        page.get_by_role("button", name="Show").click()
        expect(page.locator("[data-field=plan]")).to_have_text("Pro (monthly)")
        shot(page, "as-of-1280")

        page.get_by_role("navigation", name="Console").get_by_role("link", name="What-if").click()
        page.get_by_label("Upgrade new cycle").select_option("true")
        page.get_by_role("button", name="Compare").click()
        expect(page.locator("#what-if-summary")).to_contain_text("would differ")
        expect(page.get_by_role("row").filter(has_text=UPGRADE)).to_contain_text("36.33")
        shot(page, "what-if-1280")
    finally:
        context.close()


def test_every_page_reads_on_a_phone_without_sideways_scrolling(server: dict[str, str], browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    pages: dict[str, Any] = {
        "search": "/console/?q=a", "workspace": f"/console/workspaces/{SEED_003}",
        "invoice": f"/console/workspaces/{SEED_003}/invoices/{UPGRADE}",
        "as-of": f"/console/workspaces/{SEED_003}/as-of?at=2026-04-05T00:00",
        "what-if": f"/console/workspaces/{SEED_003}/what-if?upgrade_new_cycle=true",
    }
    try:
        page.goto(f"{server['base']}/console/login")
        shot(page, "login-phone")
        page.get_by_label("API token").fill(server["token"])
        page.get_by_role("button", name="Sign in").click()
        for name, path in pages.items():
            page.goto(server["base"] + path)
            expect(page.get_by_role("main")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} scrolls sideways by {overflow}px on a phone"
            shot(page, f"{name}-phone")
    finally:
        context.close()


FORGED = ('<!doctype html><title>Win a prize</title><form method="post" action="{action}">'
          '<input type="hidden" name="sign_out" value="{value}"></form><script>document.forms[0].submit()</script>')
"""Another site's page that signs its visitor out of the console as it loads (sign-out CSRF)."""


def test_a_sign_out_forged_by_another_site_is_refused_and_the_console_sign_out_works(
        server: dict[str, str], browser: Browser) -> None:
    """Chromium posts another site's form to the console's sign-out but withholds the SameSite=Strict
    cookie, and would obey a response clearing it; the site cannot know the hidden value either."""
    context = browser.new_context(viewport=WIDE)
    evil = "http://prizes.example/"
    logout = f"{server['base']}/console/logout"
    context.route(evil + "*", lambda route: route.fulfill(
        content_type="text/html", body=FORGED.format(action=logout, value=route.request.url.split("=")[-1])))
    page = context.new_page()

    def session() -> list[str]:
        return [c["value"] for c in context.cookies(server["base"]) if c["name"] == "subledger_token"]
    try:
        page.goto(f"{server['base']}/console/login")
        page.get_by_label("API token").fill(server["token"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        real = page.locator("input[name=sign_out]").input_value()
        for value in ("", "forged", real):  # even the page's own value, posted from another site
            page.goto(f"{evil}?v={value}")
            expect(page.get_by_role("heading", name="Sign-out refused")).to_be_visible()
            assert session() == [server["token"]], value
        shot(page, "sign-out-refused-1280")
        page.goto(f"{server['base']}/console/")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert session() == []
        page.goto(f"{server['base']}/console/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()
