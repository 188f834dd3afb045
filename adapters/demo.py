"""`subledger demo`: the seeds' worked examples, narrated. The demo is a scenario file
(adapters/scenarios/demo.json) run by the scenario runner, so its numbers are also checked."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from adapters import render
from adapters.scenario import load_scenario, run_scenario

DEMO_DB = Path("subledger-demo.db")


def demo_file() -> Path:
    return Path(str(resources.files("adapters.scenarios").joinpath("demo.json")))


def fresh_demo_db() -> str:
    """./subledger-demo.db, recreated on each run so the demo always tells the same story."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        DEMO_DB.with_name(DEMO_DB.name + suffix).unlink(missing_ok=True)
    return f"sqlite:///{DEMO_DB}"


def run_demo(db: str | None = None, *, as_json: bool = False) -> int:
    path = demo_file()
    notes = {step.number: step.note for step in load_scenario(path).steps}
    url = db or fresh_demo_db()
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
    outputs, code = run_scenario(path, url, on_step=narrate)
    if not as_json:
        held = sum(1 for o in outputs if not o["expect_failures"])
        con.print(f"\n{held}/{len(outputs)} steps as expected." + ("" if code == 0 else " [red]Some were not.[/]"),
                  markup=True)
    return code
