"""Start N processes at once on each database URL and report how each one ended.

Run as `python -m tests.startup_race N WORKSPACES URL...`. The launcher imports everything
once, then for each URL forks N real processes that wait on a pipe and are released together:
each opens the ledger and its read models (the set-up every command does), catches the read
models up inline and reads every workspace, as `subledger workspaces` does, expecting
WORKSPACES of them. Prints one JSON object per process: url, exit status, error text.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from adapters.app import build_ledger, read_models, refresh
from projections.plan_state import read_plan_states


def one_process(url: str, workspaces: int) -> None:
    ledger = build_ledger(url)
    try:
        with read_models(ledger) as projections:
            refresh(projections)
            with projections.engine.connect() as conn:
                found = read_plan_states(conn)
        assert len(found) == workspaces, f"{len(found)} workspaces read, {workspaces} expected"
    finally:
        ledger.close()


def release_together(url: str, processes: int, workspaces: int) -> list[dict[str, object]]:
    go_read, go_write = os.pipe()
    children = []
    for _ in range(processes):
        err_read, err_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.read(go_read, 1)
            code, text = 0, ""
            try:
                one_process(url, workspaces)
            except BaseException:  # noqa: BLE001 - reported to the parent
                code, text = 1, traceback.format_exc()
            os.write(err_write, text.encode()[-6000:])
            os._exit(code)
        os.close(err_write)
        children.append((pid, err_read))
    os.close(go_read)
    os.write(go_write, b"x" * processes)
    os.close(go_write)
    ended = []
    for pid, err_read in children:
        with os.fdopen(err_read, "rb") as err:
            text = err.read().decode()
        _, status = os.waitpid(pid, 0)
        ended.append({"url": url, "exit": os.waitstatus_to_exitcode(status), "error": text})
    return ended


if __name__ == "__main__":
    count, expected = int(sys.argv[1]), int(sys.argv[2])
    for database in sys.argv[3:]:
        for outcome in release_together(database, count, expected):
            print(json.dumps(outcome), flush=True)
