"""Scenario files: a JSON timeline of commands on a test clock, each step checked against its
expectations. This is the black-box contract of docs/scenarios.md; the demo is one of them.

A file is validated whole before anything runs, so an invalid file (exit 2) records nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, get_args

from adapters import json_text
from adapters.app import build_ledger, read_models
from adapters.instants import parse_instant
from domain.catalog import BUILT_IN, Catalog, CatalogError, load_catalog
from domain.commands import COMMANDS, ID, ID_RULE, Actor, Channels, check_new_workspace_id, parse_actor, parse_command
from domain.errors import LedgerError
from domain.clock import run_until
from domain.ledger import Ledger, TestClock
from domain.subscription import Subscription
from projections.plan_state import read_plan_state
from projections.runner import Projections
from projections.views import event_types, invoice_view, iso, outcome_view, plan_state

READ_ONLY = ("advance", "show", "preview")
STEP_KEYS = {"at", "workspace", "actor", "do", "with", "expect", "idempotency_key", "channel", "reason", "note"}
EXPECT_KEYS = {"ok", "error", "events", "events_include", "due_events", "due_events_include", "invoice", "state",
               "outcome"}
DEFAULT_ACTOR = {"id": "scenario-admin", "role": "admin"}
DEFAULT_CHANNEL = "scenario"
PEOPLE_ROLES = ("owner", "admin", "billing_admin", "member", "sales")


class ScenarioInvalid(ValueError):
    """The file cannot be run as written; the message names the step and the problem."""


@dataclass(frozen=True)
class Step:
    number: int
    at: datetime
    do: str
    workspace: str | None
    actor: Actor
    args: dict[str, Any]
    expect: dict[str, Any]
    idempotency_key: str | None = None
    channel: str = DEFAULT_CHANNEL
    reason: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Scenario:
    path: Path
    catalog: Catalog
    catalog_ref: str | Path
    start: datetime
    steps: list[Step]
    workspace_catalogs: dict[str, Catalog] = field(default_factory=dict)


# ------------------------------------------------------------------ loading


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario file; raises ScenarioInvalid naming the step at fault."""
    path = Path(path)
    try:
        data = json_text.loads(path.read_text("utf-8"))
    except OSError as e:
        raise ScenarioInvalid(f"cannot read the file: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:  # a JSONDecodeError, or a number too long
        raise ScenarioInvalid(f"not valid JSON: {e}") from None
    except RecursionError:
        raise ScenarioInvalid("not a scenario: its arrays or objects are nested too deeply") from None
    if not isinstance(data, dict):
        raise ScenarioInvalid("the file must hold a JSON object with 'catalog' and 'steps'")
    unknown = set(data) - {"catalog", "start", "steps", "workspaces", "title", "description"}
    if unknown:
        raise ScenarioInvalid(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    if "catalog" not in data:
        raise ScenarioInvalid("missing 'catalog' (forms, workspace, operations or a TOML path)")
    catalog_ref = _catalog_ref(data["catalog"], path.parent, "catalog")
    catalog = _catalog(catalog_ref, "catalog")
    workspaces = data.get("workspaces", {})
    if not isinstance(workspaces, dict):
        raise ScenarioInvalid("'workspaces' must map workspace ids to catalogs")
    workspace_catalogs = {_id(ws, "workspaces"): _catalog(_catalog_ref(ref, path.parent, f"workspaces.{ws}"),
                                                          f"workspaces.{ws}")
                          for ws, ref in workspaces.items()}
    for ws, other in workspace_catalogs.items():
        if other.id == catalog.id and other != catalog:
            raise ScenarioInvalid(f"workspaces.{ws}: a different catalog with the same id {other.id!r} as 'catalog'")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioInvalid("'steps' must be a non-empty list")
    parsed: list[Step] = []
    start = _instant(data["start"], "start") if "start" in data else None
    last = start
    for number, raw in enumerate(steps, 1):
        try:
            step = _step(number, raw)
        except ScenarioInvalid as e:
            raise ScenarioInvalid(f"step {number}: {e}") from None
        if last is not None and step.at < last:
            raise ScenarioInvalid(f"step {number}: at {iso(step.at)} is before {iso(last)}: "
                                  "the test clock never goes back")
        last = step.at
        parsed.append(step)
    return Scenario(path, catalog, catalog_ref, start or parsed[0].at, parsed, workspace_catalogs)


def _catalog_ref(ref: Any, base: Path, where: str) -> str | Path:
    """A built-in name as is; anything else is a TOML path relative to the scenario file."""
    if not isinstance(ref, str) or not ref:
        raise ScenarioInvalid(f"{where}: must be a built-in catalog name or a TOML path")
    if ref in BUILT_IN:
        return ref
    if not ref.endswith(".toml"):
        raise ScenarioInvalid(f"{where}: unknown catalog {ref[:40]!r}: use {', '.join(BUILT_IN)} or a .toml path")
    return base / ref


def _catalog(ref: str | Path, where: str) -> Catalog:
    try:
        return load_catalog(ref)
    except CatalogError as e:
        raise ScenarioInvalid(f"{where}: {e}") from None


def _id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(ID, value):
        raise ScenarioInvalid(f"{where}: {str(value)[:70]!r} is not a valid id ({ID_RULE})")
    return value


def _instant(value: Any, where: str) -> datetime:
    """ISO-8601; without a timezone it is read as UTC."""
    try:
        return parse_instant(value)
    except ValueError as e:
        raise ScenarioInvalid(f"{where}: {e}") from None


def _step(number: int, raw: Any) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioInvalid("must be an object")
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise ScenarioInvalid(f"unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("at", "do"):
        if key not in raw:
            raise ScenarioInvalid(f"missing '{key}'")
    do = raw["do"]
    if do not in COMMANDS and do not in READ_ONLY:
        known = ", ".join(sorted([*COMMANDS, *READ_ONLY]))
        raise ScenarioInvalid(f"unknown command {str(do)[:40]!r}; known: {known}")
    workspace = raw.get("workspace")
    if workspace is None and do != "advance":
        raise ScenarioInvalid(f"missing 'workspace' ({do} acts on one workspace)")
    if workspace is not None:
        _id(workspace, "workspace")
        try:
            check_new_workspace_id(workspace)
        except LedgerError as e:
            raise ScenarioInvalid(f"workspace: {e.message}") from None
    args = raw.get("with", {})
    if not isinstance(args, dict):
        raise ScenarioInvalid("'with' must be an object of arguments")
    if do in ("advance", "show") and args:
        raise ScenarioInvalid(f"{do} takes no arguments")
    if do == "preview" and args.get("do") not in COMMANDS:
        raise ScenarioInvalid(f"preview needs with.do naming a command; got {str(args.get('do'))[:40]!r}")
    try:
        actor = parse_actor(raw.get("actor", DEFAULT_ACTOR))
    except LedgerError as e:
        raise ScenarioInvalid(e.message) from None
    if actor.role not in PEOPLE_ROLES:
        raise ScenarioInvalid(f"actor.role must be one of {', '.join(PEOPLE_ROLES)} (system is the scheduler's)")
    channel = raw.get("channel", DEFAULT_CHANNEL)
    if channel not in get_args(Channels):
        raise ScenarioInvalid(f"channel must be one of {', '.join(get_args(Channels))}")
    key = raw.get("idempotency_key")
    if key is not None:
        _id(key, "idempotency_key")
    reason = raw.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise ScenarioInvalid("reason must be a string of at most 500 characters")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise ScenarioInvalid("note must be a string")
    return Step(number, _instant(raw["at"], "at"), do, workspace, actor, args, _expect(raw.get("expect", {})),
                key, channel, reason, note)


def _expect(expect: Any) -> dict[str, Any]:
    if not isinstance(expect, dict):
        raise ScenarioInvalid("'expect' must be an object")
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        raise ScenarioInvalid(f"unknown expect key(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(EXPECT_KEYS))}")
    if "ok" in expect and not isinstance(expect["ok"], bool):
        raise ScenarioInvalid("expect.ok must be true or false")
    if "error" in expect and not (expect["error"] is None or isinstance(expect["error"], str)):
        raise ScenarioInvalid("expect.error must be an error code string or null")
    for key in ("events", "events_include", "due_events", "due_events_include"):
        if key in expect and not (isinstance(expect[key], list) and all(isinstance(e, str) for e in expect[key])):
            raise ScenarioInvalid(f"expect.{key} must be a list of event type names")
    if "invoice" in expect and not (expect["invoice"] is None or isinstance(expect["invoice"], dict)):
        raise ScenarioInvalid("expect.invoice must be an object or null")
    if "state" in expect and not isinstance(expect["state"], dict):
        raise ScenarioInvalid("expect.state must be an object")
    if "outcome" in expect and not (expect["outcome"] is None or isinstance(expect["outcome"], dict)):
        raise ScenarioInvalid("expect.outcome must be an object or null")
    return expect


# ------------------------------------------------------------------ running


def outcome(ledger: Ledger, workspace: str | None, do: str, error: LedgerError | None,
            events: list[Subscription.Event], due_events: list[Subscription.Event],
            replayed: bool = False, previewed: Subscription | None = None,
            after: Subscription | None = None) -> dict[str, Any]:
    """One step's (or one CLI command's) report: what was asked, what was recorded, the state after
    (`after`: the workspace as this command left it, not as later writers did; else as it is now),
    and for an accepted preview the state the change would produce (`previewed`, R25)."""
    invoices = [e for e in [*due_events, *events] if isinstance(e, Subscription.InvoiceIssued)]
    sub = after if after is not None else ledger.get(workspace) if workspace else None
    return {
        "at": iso(events[0].timestamp if events else ledger.clock.now()),  # the instant recorded, to the microsecond
        "workspace": workspace,
        "do": do,
        "ok": error is None,
        "error": error.as_dict() if error else None,
        "events": event_types(events),
        "due_events": event_types(due_events),
        "invoice": invoice_view(invoices[-1]) if invoices else None,
        "state": plan_state(sub, ledger.catalog_for(sub)) if workspace else None,
        "outcome": outcome_view(previewed, ledger.catalog_for(previewed)) if previewed is not None else None,
        "replayed": replayed,
    }


def run_step(ledger: Ledger, step: Step, due: dict[str, list[Subscription.Event]],
             projections: Projections | None = None) -> dict[str, Any]:
    """Run the step's command (if any) once every workspace has recorded `due`, what fell due
    by the step's instant. With `projections` the read models catch up inline and `state` is
    read from plan_state."""
    ws = step.workspace
    due_events = due.get(ws, []) if ws else [e for events in due.values() for e in events]
    error: LedgerError | None = None
    events: list[Subscription.Event] = []
    replayed = False
    previewed: Subscription | None = None
    after: Subscription | None = None
    if ws is not None and step.do not in ("advance", "show"):
        try:
            if step.do == "preview":
                args = {k: v for k, v in step.args.items() if k != "do"}
                result = ledger.preview(ws, parse_command(step.args["do"], args), step.actor, channel=step.channel)
            else:
                result = ledger.handle(ws, parse_command(step.do, step.args), step.actor, channel=step.channel,
                                       idempotency_key=step.idempotency_key, reason=step.reason)
        except LedgerError as e:
            error = e
        else:
            error, events, replayed = result.error, result.events, result.replayed
            due_events += result.due_events
            if step.do == "preview" and result.ok:
                previewed = result.subscription
            elif result.ok:
                after = result.subscription
    out = {"step": step.number, **outcome(ledger, ws, step.do, error, events, due_events, replayed, previewed, after)}
    if projections is not None:
        projections.catch_up()
        with projections.engine.connect() as conn:
            read = read_plan_state(conn, ws) if ws else None
        if read is not None and out["state"] is not None and read.get("version") == out["state"].get("version"):
            out["state"] = read  # the read model at this step's version (a later writer's is not this step's)
    out["expect_failures"] = check_expect(step.expect, out)
    return out


def run_scenario(path: str | Path, db_url: str | None = None, *,
                 on_step: Callable[[dict[str, Any]], None] | None = None,
                 stderr: IO[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Run a scenario file: (one output per step, exit code 0 all expects hold | 1 one failed |
    2 invalid file). Without `db_url` it runs on a fresh SQLite database that is thrown away."""
    err = stderr or sys.stderr
    try:
        scenario = load_scenario(path)
    except ScenarioInvalid as e:
        print(f"error: {path}: invalid scenario: {e} [invalid_request]", file=err)
        return [], 2
    outputs: list[dict[str, Any]] = []
    clock = TestClock(scenario.start)
    with _database(db_url) as url:
        try:
            ledger = build_ledger(url, catalog=scenario.catalog_ref, clock=clock)
        except (ValueError, CatalogError, LedgerError) as e:
            if isinstance(e, LedgerError) and e.code == "unavailable":
                raise  # the database, not the file: the caller reports it (exit 3)
            print(f"error: {path}: cannot open the ledger: {e} [invalid_request]", file=err)
            return [], 2
        try:
            with read_models(ledger) as projections:
                for catalog in scenario.workspace_catalogs.values():
                    ledger.catalogs[catalog.id] = catalog
                default = ledger.default_catalog
                for step in scenario.steps:
                    due = run_until(ledger, step.at, clock.move_to)
                    chosen = scenario.workspace_catalogs.get(step.workspace or "")
                    ledger.default_catalog = chosen.id if chosen else default
                    out = run_step(ledger, step, due, projections)
                    outputs.append(out)
                    for failure in out["expect_failures"]:
                        print(f"{path}: step {step.number} ({step.do}): {failure}", file=err)
                    if on_step:
                        on_step(out)
        finally:
            ledger.close()
    return outputs, 1 if any(o["expect_failures"] for o in outputs) else 0


@contextmanager
def _database(db_url: str | None) -> Iterator[str]:
    if db_url:
        yield db_url
        return
    folder = tempfile.mkdtemp(prefix="subledger-scenario-")
    try:
        yield f"sqlite:///{folder}/scenario.db"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ expectations


def check_expect(expect: dict[str, Any], out: dict[str, Any]) -> list[str]:
    """Every way the output misses its expectation, as sentences; empty when all hold."""
    failures: list[str] = []
    got_error = out["error"]["code"] if out["error"] else None
    if "ok" in expect and expect["ok"] != out["ok"]:
        detail = f" ({out['error']['code']}: {out['error']['message']})" if out["error"] else ""
        failures.append(f"ok: expected {json.dumps(expect['ok'])}, got {json.dumps(out['ok'])}{detail}")
    if "error" in expect and expect["error"] != got_error:
        failures.append(f"error: expected {expect['error']!r}, got {got_error!r}"
                        + (f" ({out['error']['message']})" if out["error"] else ""))
    for key in ("events", "due_events"):
        if key in expect and expect[key] != out[key]:
            failures.append(f"{key}: expected {expect[key]}, got {out[key]}")
        missing = [name for name in expect.get(f"{key}_include", []) if name not in out[key]]
        if missing:
            failures.append(f"{key}_include: {missing} not among {out[key]}")
    if "invoice" in expect:
        if expect["invoice"] is None or out["invoice"] is None:
            if expect["invoice"] != out["invoice"]:
                failures.append(f"invoice: expected {json.dumps(expect['invoice'])}, "
                                f"got {'an invoice' if out['invoice'] else 'none'}")
        else:
            failures += partial_mismatches(expect["invoice"], out["invoice"], "invoice")
    if "state" in expect:
        failures += partial_mismatches(expect["state"], out["state"], "state")
    if "outcome" in expect:
        if expect["outcome"] is None or out["outcome"] is None:
            if expect["outcome"] != out["outcome"]:
                failures.append(f"outcome: expected {json.dumps(expect['outcome'])}, "
                                f"got {'an outcome' if out['outcome'] else 'none'}")
        else:
            failures += partial_mismatches(expect["outcome"], out["outcome"], "outcome")
    return failures


def partial_mismatches(expected: Any, actual: Any, where: str) -> list[str]:
    """Dicts match on the expected keys only; lists match item by item with equal lengths;
    scalars match exactly, type included (amounts are strings: "20.00", not 20)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {json.dumps(actual)}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{where}.{key}: no such field (fields: {', '.join(actual)})")
            else:
                out += partial_mismatches(value, actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {json.dumps(actual)}"]
        if len(expected) != len(actual):
            return [f"{where}: expected {len(expected)} item(s), got {len(actual)}: {json.dumps(actual)}"]
        return [m for i, (e, a) in enumerate(zip(expected, actual)) for m in partial_mismatches(e, a, f"{where}[{i}]")]
    if expected == actual and type(expected) is type(actual):
        return []
    hint = " (amounts are strings, e.g. \"20.00\")" if isinstance(expected, (int, float)) and isinstance(actual, str) else ""
    return [f"{where}: expected {json.dumps(expected)}, got {json.dumps(actual)}{hint}"]
