"""localstripe started once per test session on a free 127.0.0.1 port, never the real Stripe.

Skips when localstripe is not installed, except under CI=true, where it fails: CI must prove
the Stripe path. `stripe_gateway` is a StripeGateway on a fresh SQLite ledger; `stripe_env`
sets the variables `SUBLEDGER_PAYMENTS=stripe` reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
import uvicorn

from adapters.stripe_gateway import StripeGateway

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_test_subledger"
WEBHOOK_SECRET = "whsec_subledger_test"


def signed(event: dict[str, Any], at: float | None = None, secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    """httpx arguments of a delivery of `event` as Stripe signs it (at `at`, default now)."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, int(at or time.time()))
    return {"content": payload, "headers": {"Stripe-Signature": header, "Content-Type": "application/json"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalStripe:
    url: str

    def register_webhook(self, name: str, url: str, secret: str = WEBHOOK_SECRET) -> None:
        """Point localstripe's webhooks at `url` (its own `/_config` endpoint)."""
        httpx.post(f"{self.url}/_config/webhooks/{name}", data={"url": url, "secret": secret}).raise_for_status()

    def authenticate(self, intent: Any, success: bool = True) -> None:
        """The customer completes (or fails) 3-D Secure: localstripe's `_authenticate` endpoint."""
        httpx.post(f"{self.url}/v1/payment_intents/{intent['id']}/_authenticate",
                   data={"client_secret": intent["client_secret"], "success": str(success).lower(),
                         "key": "pk_test_subledger"}).raise_for_status()


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    try:
        import localstripe as _  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("localstripe is not installed, and CI=true requires it (pip install -e '.[test]')")
        pytest.skip("localstripe is not installed")
    proc = subprocess.Popen([sys.executable, "-m", "tests.localstripe_server"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not port.isdigit():
            pytest.fail(f"localstripe did not start: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/v1/customers", auth=(API_KEY, ""), timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    pytest.fail(f"localstripe did not start: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.05)
        else:
            pytest.fail("localstripe did not answer within 10 s")
        yield LocalStripe(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def stripe_env(localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> LocalStripe:
    monkeypatch.setenv("SUBLEDGER_PAYMENTS", "stripe")
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", localstripe.url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return localstripe


@pytest.fixture
def stripe_gateway(localstripe: LocalStripe, tmp_path: Path) -> Iterator[StripeGateway]:
    gateway = StripeGateway(f"sqlite:///{tmp_path}/ledger.db", API_KEY, localstripe.url)
    yield gateway
    gateway.close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app over real HTTP on a free 127.0.0.1 port (as `subledger serve` runs it): its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here, so no other test takes the port between choosing and serving
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
