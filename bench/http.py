"""The HTTP API's cost: requests per second and p50/p99 latency of a preview (with its quote)
and of a command through a real `subledger serve` (uvicorn) on PostgreSQL, beside the
in-process rate of the same calls (Ledger.preview, Ledger.handle) measured in the same run.

    .venv/bin/python bench/http.py [N] [--db postgresql://...] [--workers 2] [--clients 4]

The database comes from --db, else $SUBLEDGER_DB if it is a PostgreSQL URL, else the local
server's `test` database; the benchmark works in a schema of its own, dropped after. The
preview is `set-seats` on the workspace catalog's team plan (a prorated seat charge, priced
and quoted: one quote row written); the command is `set-members` (load, decide, save).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
import psycopg  # noqa: E402

from adapters.app import build_ledger  # noqa: E402
from adapters.tokens import TokenStore  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKSPACES = 10
ADMIN = Actor(id="bench", role="admin")


def setup(url: str) -> dict[str, str]:
    """Ten workspaces on the team plan with two seats; an admin token for each."""
    ledger = build_ledger(url, catalog="workspace")
    for i in range(WORKSPACES):
        ledger.handle(f"ws{i}", parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), ADMIN)
        ledger.handle(f"ws{i}", parse_command("subscribe", {"plan": "team", "interval": "month", "seats": 2}), ADMIN)
    ledger.close()
    store = TokenStore(url)
    tokens = {f"ws{i}": store.create("admin", f"ws{i}")[1] for i in range(WORKSPACES)}
    store.close()
    return tokens


def summary(latencies: list[float], wall: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return len(latencies) / wall, cuts[49] * 1000, cuts[98] * 1000


def in_process(url: str, n: int) -> dict[str, tuple[float, float, float]]:
    ledger = build_ledger(url, catalog="workspace")
    calls: dict[str, Callable[[int], object]] = {
        "preview": lambda i: ledger.preview(f"ws{i % WORKSPACES}", parse_command("set-seats", {"seats": 5}), ADMIN),
        "command": lambda i: ledger.handle(f"ws{i % WORKSPACES}", parse_command("set-members", {"members": i % 3}),
                                           ADMIN),
    }
    out = {}
    for name, call in calls.items():
        latencies = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            call(i)
            latencies.append(time.perf_counter() - t)
        out[name] = summary(latencies, time.perf_counter() - start)
    ledger.close()
    return out


def over_http(base: str, tokens: dict[str, str], n: int, clients: int) -> dict[str, tuple[float, float, float]]:
    requests = {
        "preview": lambda i: (f"/v1/workspaces/ws{i % WORKSPACES}/preview/set-seats", {"seats": 5}),
        "command": lambda i: (f"/v1/workspaces/ws{i % WORKSPACES}/set-members", {"members": i % 3}),
    }
    out = {}
    for name, make in requests.items():
        latencies: list[float] = []
        failures: list[str] = []
        counter = iter(range(n))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    path, body = make(i)
                    t = time.perf_counter()
                    r = http.post(path, json=body, headers={"Authorization": f"Bearer {tokens[f'ws{i % WORKSPACES}']}"})
                    elapsed = time.perf_counter() - t
                    with lock:
                        latencies.append(elapsed)
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        if failures:
            raise SystemExit(f"{name}: {len(failures)} failed, e.g. {failures[0]}")
        out[name] = summary(latencies, wall)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SUBLEDGER_DB": url, "PYTHONPATH": str(ROOT)}
    env.pop("SUBLEDGER_TEST_CLOCK", None)
    server = subprocess.Popen([sys.executable, "-m", "adapters.cli", "--catalog", "workspace", "serve", "--port",
                               str(port), "--workers", str(workers)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("subledger serve exited")
        try:
            httpx.get(base + "/healthz", timeout=2)
            return server, base
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("subledger serve did not answer within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP API requests/s and latency beside in-process calls.")
    parser.add_argument("n", nargs="?", type=int, default=300)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB or the local test db)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (threads)")
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{pg}?schema={schema}"
    try:
        tokens = setup(url)
        local = in_process(url, args.n)
        server, base = serve(url, args.workers)
        try:
            remote = over_http(base, tokens, args.n, args.clients)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"n = {args.n} per run, PostgreSQL, {args.workers} worker(s), {args.clients} HTTP clients")
    for name, local_label, http_label in (("preview", "Ledger.preview set-seats", "POST preview/set-seats (+quote)"),
                                          ("command", "Ledger.handle set-members", "POST set-members")):
        rate, p50, p99 = local[name]
        print(f"in-process {local_label:<31} {rate:8.0f}/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ratio 1.00")
        h_rate, h_p50, h_p99 = remote[name]
        print(f"HTTP       {http_label:<31} {h_rate:8.0f}/s  p50 {h_p50:7.1f} ms  p99 {h_p99:7.1f} ms  "
              f"ratio {h_rate / rate:.2f}")


if __name__ == "__main__":
    main()
