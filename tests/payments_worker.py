"""One process of tests/test_payments_concurrency.py: a seeded stream of charging commands on
shared workspaces, through the persisted test gateway of the ledger's database.

    python tests/payments_worker.py URL --index I --count N [--barrier DIR] [--pause-after-charge S]

Command `i` of worker `I` always has the same arguments and idempotency key (`wI-i`), so a
worker restarted after SIGKILL replays its stream from the start: what was recorded comes
back by key, what was not is decided anew. Refusals are counted and printed as JSON on stdout;
any exception is printed on stderr and exits 3. `--pause-after-charge` sleeps between the
gateway's answer and the ledger recording it (printing `charged KEY` first), so that a kill
lands in that window; the pause lives here, not in production code.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.app import build_ledger  # noqa: E402
from adapters.payments import TestPaymentGateway  # noqa: E402
from domain.commands import Actor, parse_command  # noqa: E402
from domain.ledger import TestClock  # noqa: E402
from domain.payments import ChargeRequest, ChargeResult  # noqa: E402

INSTANT = datetime(2026, 4, 11, tzinfo=timezone.utc)
WORKSPACES = ("wa", "wb")
ADMIN = Actor(id="alice", role="admin")


class PausingGateway:
    """The persisted test gateway, pausing after each charge the provider answered."""

    def __init__(self, inner: TestPaymentGateway, pause: float) -> None:  # ok-float: seconds
        self.inner = inner
        self.pause = pause

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result = self.inner.charge(request)
        print(f"charged {request.idempotency_key} {result.outcome}", flush=True)
        time.sleep(self.pause)
        return result

    def cancel(self, idempotency_key: str) -> ChargeResult:
        return self.inner.cancel(idempotency_key)

    def close(self) -> None:
        self.inner.close()


def random_command(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    ws = rng.choice(WORKSPACES)
    name, args = rng.choice([
        ("change-plan", {"plan": "business"}),
        ("change-plan", {"plan": "team"}),
        ("set-seats", {"seats": rng.randint(2, 9)}),
        ("set-seats", {"seats": rng.randint(2, 9)}),
        ("buy-ai-credits", {"pack": "ai-1000"}),
    ])
    if rng.random() < 0.03:
        name, args = "add-payment-method", {"payment_method": "pm_card_chargeDeclined"}
    elif rng.random() < 0.1:
        name, args = "add-payment-method", {"payment_method": "pm_card_visa"}
    return ws, name, args


def stream(index: int, count: int) -> list[tuple[str, str, dict[str, Any], str]]:
    """(workspace, command, args, idempotency key) for each of the worker's commands. Some keys
    are shared by every worker (`s0`..`s9`, each always with the same command), so that
    processes race on one key: one of them records it, the others get it replayed."""
    rng = random.Random(1000 + index)
    out: list[tuple[str, str, dict[str, Any], str]] = []
    for i in range(count):
        roll = rng.random()
        if out and roll < 0.1:
            out.append(rng.choice(out))  # the same key and arguments again
        elif roll < 0.2:
            shared = rng.randrange(10)
            out.append((*random_command(random.Random(shared)), f"s{shared}"))
        else:
            out.append((*random_command(rng), f"w{index}-{i}"))
    return out


def wait_at_barrier(barrier: Path, index: int) -> None:
    (barrier / f"ready-{index}").touch()
    deadline = time.monotonic() + 60
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no go signal within 60 s")
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--barrier", type=Path)
    parser.add_argument("--pause-after-charge", type=float, default=0.0)  # ok-float: seconds
    opts = parser.parse_args()
    gateway: Any = TestPaymentGateway(opts.url)
    if opts.pause_after_charge:
        gateway = PausingGateway(gateway, opts.pause_after_charge)
    ledger = build_ledger(opts.url, catalog="workspace", clock=TestClock(INSTANT), payments=gateway)
    seen: Counter[str] = Counter()
    try:
        if opts.barrier:
            wait_at_barrier(opts.barrier, opts.index)
        for ws, name, args, key in stream(opts.index, opts.count):
            result = ledger.handle(ws, parse_command(name, args), ADMIN, idempotency_key=key)
            seen["replayed" if result.replayed else result.error.code if result.error else "ok"] += 1
    except BaseException as error:  # noqa: BLE001 - reported to the test, which fails on it
        print(f"worker {opts.index}: {type(error).__name__}: {error}", file=sys.stderr)
        traceback.print_exc()
        return 3
    finally:
        ledger.close()
    print(json.dumps(dict(seen)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
