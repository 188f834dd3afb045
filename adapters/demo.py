"""`subledger demo`: the seeds' worked examples, narrated. The demo is a scenario file
(adapters/scenarios/demo.json) run by the scenario runner, so its numbers are also checked."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from adapters import render
from adapters.app import build_ledger, read_models
from adapters.scenario import load_scenario, run_scenario
from adapters.project_cli import verdict
from domain.errors import LedgerError
from projections.journal import trial_balance
from replay.verify import verify

DEMO_DB = Path("subledger-demo.db")


def demo_file() -> Path:
    return Path(str(resources.files("adapters.scenarios").joinpath("demo.json")))


JOURNALS = ("-wal", "-shm", "-journal")


@contextmanager
def fresh_demo_db() -> Iterator[str]:
    """./subledger-demo.db, made afresh so the demo always tells the same story. It is built
    under a name of its own and put in place in one rename once the story is told: a demo cut
    short (`demo | head`, Ctrl-C) leaves the last whole demo database, never half of one, and
    two demos at once each build their own."""
    handle, name = tempfile.mkstemp(prefix=f".{DEMO_DB.name}.", suffix=".partial", dir=DEMO_DB.parent)
    os.close(handle)  # an empty file: SQLite makes a new database in it
    building = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    building.chmod(0o666 & ~umask)  # as any new file (mkstemp's is private)
    try:
        yield f"sqlite:///{building}"
        with closing(sqlite3.connect(building)) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # all in the one file that moves
        if busy:
            raise LedgerError("unavailable", f"the demo database {building} is still in use: it was not moved into place")
        for suffix in JOURNALS:  # the old database's journal must not meet the new one
            DEMO_DB.with_name(DEMO_DB.name + suffix).unlink(missing_ok=True)
        building.replace(DEMO_DB)
    finally:
        for suffix in ("", *JOURNALS, "-lock"):
            building.with_name(building.name + suffix).unlink(missing_ok=True)


def run_demo(db: str | None = None, *, as_json: bool = False) -> int:
    path = demo_file()
    notes = {step.number: step.note for step in load_scenario(path).steps}
    url = db or f"sqlite:///{DEMO_DB}"
    con = render.console()

    def narrate(out: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(out))
            return
        if notes.get(out["step"]):
            con.print(f"\n[bold][{out['at'][:10]}][/] {notes[out['step']]}", markup=True)
        render.print_outcome(out, con)
        for failure in out["expect_failures"]:
            con.print(f"  [red]expected otherwise:[/] {failure}", markup=True)

    if not as_json:
        con.print(f"[bold]subledger demo[/]: the seeds' worked examples on a test clock ({url})", markup=True)
    with (nullcontext(db) if db else fresh_demo_db()) as building:
        outputs, code = run_scenario(path, building, on_step=narrate)
    if not as_json:
        held = sum(1 for o in outputs if not o["expect_failures"])
        con.print(f"\n{held}/{len(outputs)} steps as expected." + ("" if code == 0 else " [red]Some were not.[/]"),
                  markup=True)
        books_ok = print_books(url, con)
        code = code or (0 if books_ok else 1)
    return code


def print_books(url: str, con: Any) -> bool:
    """What finance reads afterwards: the journal's trial balance and `audit verify`."""
    ledger = build_ledger(url)
    try:
        with read_models(ledger) as projections:
            with projections.engine.connect() as conn:
                balances = trial_balance(conn)
            checked = verify(projections)
    finally:
        ledger.close()
    total = sum(balances.values(), Decimal(0))
    con.print("\n[bold]Books[/] (read models, kept current inline):", markup=True)
    for account, amount in sorted(balances.items()):
        con.print(f"  {account:<24} {amount:>12.2f}", markup=False)
    con.print(f"  {'trial balance':<24} {total:>12.2f}", markup=False)
    con.print(f"  audit verify: {verdict(checked)}", markup=False)
    return total == 0 and checked["ok"]
