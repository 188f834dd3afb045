"""Processes that open the same PostgreSQL database at the same moment all start: the event
store's schema, tables, type and insert function are created (or replaced) in turn, never in
a race."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.app import build_ledger

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4
OPEN_TWICE = """
import sys, time
from pathlib import Path
from adapters.app import build_ledger
url, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
for turn in ("new", "existing"):
    (barrier / f"{turn}-ready-{me}").touch()
    while not (barrier / f"{turn}-go").exists():
        time.sleep(0.005)
    build_ledger(url).close()
"""


def release(barrier: Path, turn: str, started: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 60
    while len(list(barrier.glob(f"{turn}-ready-*"))) < len(started):
        if any(p.poll() is not None for p in started) or time.monotonic() > deadline:
            break  # a process died (or hangs): its error is asserted below
        time.sleep(0.01)
    (barrier / f"{turn}-go").touch()


def test_processes_opening_a_new_or_existing_postgres_store_at_once_all_start(pg_url: str, tmp_path: Path) -> None:
    started = [subprocess.Popen([sys.executable, "-c", OPEN_TWICE, pg_url, str(tmp_path), str(i)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(PROCESSES)]
    release(tmp_path, "new", started)  # the schema does not exist yet
    release(tmp_path, "existing", started)  # every start replaces the library's insert function
    errors = [err for p in started for _, err in [p.communicate(timeout=120)] if p.returncode != 0]
    assert errors == []
    build_ledger(pg_url).close()
