"""`subledger` as a user runs it, in processes of its own: the command line, API tokens made by
it, and `subledger serve` on a free port. Shared by the end-to-end HTTP tests, which must see
only what the command line and the HTTP API show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.stripe_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent


def subledger(url: str, *args: str, catalog: str = "workspace") -> list[str]:
    """The command line on the ledger of `url` (new workspaces on `catalog`)."""
    exe = Path(sys.executable).parent / "subledger"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "adapters.cli"]
    return [*command, "--db", url, "--catalog", catalog, *args]


def cli(url: str, *args: str, catalog: str = "workspace") -> subprocess.CompletedProcess[str]:
    """A CLI run; the variables it reads (Stripe's, the test clock) come from the environment."""
    return subprocess.run(subledger(url, *args, catalog=catalog), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def make_tokens(url: str, roles: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    """`subledger tokens create --json` per name -> (role, workspace), run side by side."""
    making = {}
    for name, (role, workspace) in roles.items():
        scope = ["--workspace", workspace] if workspace else []
        making[name] = subprocess.Popen(subledger(url, "tokens", "create", "--role", role, *scope, "--json"),
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tokens = {}
    for name, made in making.items():
        out, err = made.communicate(timeout=120)
        assert made.returncode == 0, err
        tokens[name] = json.loads(out)["token"]
    return tokens


class Server:
    """`subledger serve` in a process group of its own, so that all of it can be killed."""

    def __init__(self, url: str, log: Path, *options: str, catalog: str = "workspace") -> None:
        self.url, self.log, self.port = url, log, free_port()
        self.options, self.catalog = options, catalog
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                subledger(self.url, "serve", "--port", str(self.port), *self.options, catalog=self.catalog),
                cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "subledger serve did not answer within 90 s"
            time.sleep(0.1)

    def workers(self) -> list[int]:
        """The worker processes uvicorn spawned."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children
                if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]

    def kill(self) -> None:
        """SIGKILL the whole server: the supervisor and its workers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def subscribe_over_http(server: Server, tokens: dict[str, str]) -> None:
    """Each workspace of `tokens` (workspace -> its admin token): a good card, then team with 3
    seats, monthly, through the HTTP API as a client sees it."""
    with httpx.Client(base_url=server.base, timeout=60) as http:
        for ws, token in tokens.items():
            auth = {"Authorization": f"Bearer {token}"}
            for name, body in (("add-payment-method", {"payment_method": "pm_card_visa"}),
                               ("subscribe", {"plan": "team", "interval": "month", "seats": 3})):
                r = http.post(f"/v1/workspaces/{ws}/{name}", json=body, headers=auth)
                assert r.status_code == 200, r.text
