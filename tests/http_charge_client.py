"""One client process of tests/test_http_double_charge.py: a seeded stream of charging commands
sent over HTTP (httpx) to `subledger serve`, as a real client sends them.

    python -m tests.http_charge_client BASE_URL TOKENS_JSON --index I --count N --progress DIR

TOKENS_JSON maps each workspace to an admin token of it. Command `i` of client `I` has the key
`cI-i`; some keys (`s0`..`s3`, each always the same command) are sent by every client, and some
commands are sent again under an earlier key, so requests race on one key. A client retries the
SAME key while the answer is unknown (timeout, connection refused or reset, 5xx) or transient
(409 `concurrency_conflict`, `payment_pending`), as Stripe's clients do. It writes how many
commands it finished to DIR/progress-I, and prints on stdout, as JSON, the final answers it got
and why it retried (`seen`), and the command id each key was recorded under (`commands`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

RETRIED_CODES = frozenset({"concurrency_conflict", "payment_pending"})
ANSWER_DEADLINE = 150  # seconds a command may wait for a known answer: server restarts included


def command_of(rng: random.Random, workspaces: list[str]) -> tuple[str, str, dict[str, Any]]:
    ws = rng.choice(workspaces)
    if rng.random() < 0.75:
        return ws, "buy-ai-credits", {"pack": "ai-1000"}
    return ws, "set-seats", {"seats": rng.randint(3, 8)}


def stream(index: int, count: int, workspaces: list[str]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(workspace, command, body, Idempotency-Key) of each of the client's commands."""
    rng = random.Random(7000 + index)
    out: list[tuple[str, str, dict[str, Any], str]] = []
    for i in range(count):
        roll = rng.random()
        if out and roll < 0.1:
            out.append(rng.choice(out))
        elif roll < 0.3:
            shared = rng.randrange(4)
            out.append((*command_of(random.Random(shared), workspaces), f"s{shared}"))
        else:
            out.append((*command_of(rng, workspaces), f"c{index}-{i}"))
    return out


def send(http: httpx.Client, token: str, path: str, body: dict[str, Any], key: str,
         retried: Counter[str]) -> httpx.Response:
    """The answer to one command, asking again under the same key until it is a known one;
    `retried` counts why it asked again."""
    deadline = time.monotonic() + ANSWER_DEADLINE
    transient = 0
    pause = 0.05
    while True:
        try:
            r = http.post(path, json=body, headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
            if r.status_code < 500 and not (r.status_code == 409 and r.json().get("code") in RETRIED_CODES
                                            and transient < 20):
                return r
            transient += r.status_code == 409
            retried[f"retried {r.status_code}"] += 1
        except httpx.TransportError as e:
            retried[f"retried {type(e).__name__}"] += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer to {path} with key {key} within {ANSWER_DEADLINE} s")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("tokens")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--progress", type=Path, required=True)
    opts = parser.parse_args()
    tokens: dict[str, str] = json.loads(opts.tokens)
    seen: Counter[str] = Counter()
    commands: dict[str, str] = {}
    with httpx.Client(base_url=opts.base_url, timeout=httpx.Timeout(30, connect=5)) as http:
        for done, (ws, name, body, key) in enumerate(stream(opts.index, opts.count, sorted(tokens)), 1):
            r = send(http, tokens[ws], f"/v1/workspaces/{ws}/{name}", body, key, seen)
            answer = r.json()
            seen[f"{r.status_code} {answer.get('code', 'ok')}"] += 1
            if answer.get("command_id"):
                if commands.setdefault(key, answer["command_id"]) != answer["command_id"]:
                    print(f"key {key} answered with two command ids", file=sys.stderr)
                    return 3
            (opts.progress / f"progress-{opts.index}").write_text(str(done))
    print(json.dumps({"seen": dict(seen), "commands": commands}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
