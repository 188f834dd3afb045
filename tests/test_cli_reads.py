"""The read commands an operator uses: text for people by default and --json for programs on
every one; the trial balance with its signs in words; reads of a read-only SQLite file; two
rebuilds at once; bad URLs, ids, files and instants refused without a trace left behind."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from adapters import schema
from adapters.cli import app
from adapters.schema import schema_lock
from adapters.settings import eventsourcing_env
from tests.conftest import PG, fresh_postgres_schema, postgres_available

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"


def cli(db: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--db", db, *args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI exports --db to $SUBLEDGER_DB for its sub-apps: undo that after each test."""
    monkeypatch.setenv("SUBLEDGER_DB", "sqlite:///unused-placeholder.db")


def with_books(db: str) -> str:
    """acme: Pro 19.00 on 2026-04-01, Team upgrade 20.00 on 04-11; beta: Pro 19.00 on 04-12."""
    assert cli(db, "scenario", "run", str(SCENARIOS / "forms_upgrade.json")).exit_code == 0
    return db


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def books_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ledger per database kind for the tests that only read it."""
    if request.param == "sqlite":
        yield with_books(f"sqlite:///{tmp_path_factory.mktemp('books')}/books.db")
        return
    schema = fresh_postgres_schema()
    yield with_books(next(schema))
    next(schema, None)


# ------------------------------------------------------------------ text by default, --json on all


@pytest.mark.parametrize(("args", "text"), [
    (["show", "acme"], "team"),
    (["invoices", "acme"], "= 19.00 x 1 x 20/30 days"),
    (["audit", "acme"], "PlanUpgraded  by alice (admin) via scenario"),
    (["workspaces"], "beta"),
    (["books"], "credit 58.00"),
    (["project", "status"], "audit_trail"),
    (["project"], "plan_state"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_read_command_prints_text_by_default_and_json_on_request(books_db: str, args: list[str],
                                                                       text: str) -> None:
    readable = cli(books_db, *args)
    assert readable.exit_code == 0 and text in readable.stdout, readable.output
    for as_json in (cli(books_db, "--json", *args), cli(books_db, *args, "--json")):
        assert as_json.exit_code == 0, as_json.output
        lines = as_json.stdout.splitlines()
        assert json.loads(as_json.stdout) if args[0] != "audit" else [json.loads(line) for line in lines]


def test_invoices_show_every_line_with_its_arithmetic_and_the_payments(books_db: str) -> None:
    out = cli(books_db, "invoices", "acme").stdout
    assert out.index("invoice in_acme_0001 (subscription)") < out.index("invoice in_acme_0002 (upgrade)")
    for text in ("-12.67  plan_credit", "= 19.00 x 1 x 20/30 days = 12.666667 -> 12.67", "32.67  plan_charge",
                 "20.00  subtotal", "20.00  amount due (USD)", "status paid", "payment succeeded",
                 "upcoming renewal, due 2026-05-01", "49.00  due at renewal (USD)"):
        assert text in out
    data = json.loads(cli(books_db, "invoices", "acme", "--json").stdout)
    assert [i["amount_due"] for i in data["invoices"]] == ["19.00", "20.00"]
    assert data["invoices"][1]["lines"][0]["formula"].endswith("-> 12.67")


def test_books_is_the_trial_balance_with_signs_in_words(books_db: str) -> None:
    def balance(*args: str) -> dict[str, str]:
        found = json.loads(cli(books_db, "books", "--json", *args).stdout)
        assert found["currencies"]["USD"]["total"] == "0.00"
        return found["currencies"]["USD"]["accounts"]

    assert balance() == {"cash": "58.00", "receivable": "0.00", "revenue": "-58.00"}
    assert balance("--workspace", "acme")["cash"] == "39.00"
    assert balance("--at", "2026-04-10T00:00:00Z") == {"cash": "19.00", "receivable": "0.00", "revenue": "-19.00"}
    text = cli(books_db, "books", "--workspace", "beta").stdout
    assert "Trial balance of beta" in text and "debits are positive, credits negative" in text
    assert "debit 19.00" in text and "credit 19.00" in text and "balanced" in text
    empty = cli(books_db, "books", "--at", "2026-03-01T00:00:00Z")
    assert empty.exit_code == 0 and "no postings yet" in empty.stdout


def test_workspaces_lists_every_workspace_with_its_plan(books_db: str) -> None:
    states = json.loads(cli(books_db, "workspaces", "--json").stdout)
    assert [(s["workspace"], s["plan"], s["status"]) for s in states] == [("acme", "team", "active"),
                                                                           ("beta", "pro", "active")]
    assert "team/month" in cli(books_db, "workspaces").stdout


def test_an_empty_ledger_reads_as_empty(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/empty.db"
    assert cli(db, "workspaces").stdout.strip() == "no workspaces yet"
    assert json.loads(cli(db, "--json", "workspaces").stdout) == []


def test_a_workspace_named_like_a_sub_command_is_refused_everywhere(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ids.db"
    result = cli(db, "add-payment-method", "verify", "--payment-method", "pm_card_visa")
    assert result.exit_code == 2 and "reserved" in result.stderr
    scenario = tmp_path / "verify.json"
    scenario.write_text(json.dumps({"catalog": "forms", "steps": [
        {"at": "2026-04-01T00:00:00Z", "workspace": "verify", "do": "show"}]}))
    result = cli(db, "scenario", "run", str(scenario))
    assert result.exit_code == 2 and "reserved" in result.stderr
    assert cli(db, "audit", "verify").exit_code == 0  # still the sub-command


def test_every_sub_command_word_is_a_reserved_workspace_id() -> None:
    from typer.main import get_command

    from domain.commands import RESERVED_WORKSPACE_IDS

    root = get_command(app)
    nested = {name for group in root.commands.values() for name in getattr(group, "commands", {})}  # type: ignore[attr-defined]
    assert nested and nested <= RESERVED_WORKSPACE_IDS


def test_a_year_9999_instant_in_a_scenario_is_bad_input(tmp_path: Path) -> None:
    scenario = tmp_path / "far.json"
    scenario.write_text(json.dumps({"catalog": "forms", "steps": [
        {"at": "9999-12-31T23:00:00-05:00", "workspace": "acme", "do": "subscribe", "with": {"plan": "pro"}}]}))
    result = cli(f"sqlite:///{tmp_path}/far.db", "scenario", "run", str(scenario))
    assert result.exit_code == 2 and "out of range" in result.stderr


# ------------------------------------------------------------------ a read-only SQLite file


@pytest.fixture
def read_only_copy(tmp_path: Path) -> Iterator[Path]:
    """A ledger file in a folder that nobody else may write, both read-only to the reader."""
    folder = Path(tempfile.mkdtemp(prefix="subledger-ro-"))
    try:
        db = f"sqlite:///{folder}/ledger.db"
        assert cli(db, "scenario", "run", str(SCENARIOS / "forms_upgrade.json")).exit_code == 0
        (folder / "ledger.db").chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        folder.chmod(0o555)
        yield folder / "ledger.db"
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def as_reader() -> list[str]:
    """The command prefix that runs as a user who may not write the file: root may write
    anything, so it drops to nobody (util-linux setpriv)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no user to read the file as")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


READ_ALL = """
import json, sys
from typer.testing import CliRunner
from adapters.cli import app
out = {}
for args in json.loads(sys.argv[2]):
    r = CliRunner().invoke(app, ["--db", sys.argv[1], *args])
    out[" ".join(args)] = [r.exit_code, r.stdout, r.stderr]
print(json.dumps(out))
"""


def test_a_read_only_sqlite_file_can_be_read(read_only_copy: Path) -> None:
    reads = [["show", "acme"], ["invoices", "acme"], ["audit", "acme"], ["workspaces"], ["books"],
             ["project", "status"], ["--json", "show", "acme"]]
    writes = [["project", "rebuild"]]
    test_time_ledger = [["add-payment-method", "gamma", "--payment-method", "pm_card_visa"]]
    done = subprocess.run([*as_reader(), sys.executable, "-c", READ_ALL, f"sqlite:///{read_only_copy}",
                           json.dumps(reads + writes + test_time_ledger)], cwd="/", capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/tmp"})
    if done.returncode != 0 and ("Permission denied" in done.stderr or "No module named" in done.stderr):
        pytest.skip("the unprivileged user cannot run this Python (e.g. a checkout in a private mktemp -d folder)")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for args in reads:
        code, stdout, stderr = results[" ".join(args)]
        assert (code, stderr) == (0, ""), (args, stdout, stderr)
    assert json.loads(results["--json show acme"][1])["plan"] == "team"
    for args in writes:
        code, _, stderr = results[" ".join(args)]
        assert code == 3 and "read-only" in stderr and "[unavailable]" in stderr, (args, stderr)
    for args in test_time_ledger:  # the scenario wrote it on a test clock: the CLI's system clock may not
        code, _, stderr = results[" ".join(args)]
        assert code == 1 and "[clock_conflict]" in stderr, (args, stderr)


# ------------------------------------------------------------------ rebuilds and set-up


def rebuild_process(db: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "adapters.cli", "--db", db, "--json", "project", "rebuild"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_rebuild_waits_for_the_running_one(tmp_path: Path) -> None:
    """SQLite's set-up lock (an flock); PostgreSQL's advisory lock is raced below."""
    books_db = with_books(f"sqlite:///{tmp_path}/rebuilds.db")
    env = schema.prepare(eventsourcing_env(books_db), read_models=True)
    with schema_lock(env):  # a rebuild running in this process
        waiting = rebuild_process(books_db)
        assert waiting.stderr is not None
        assert "a rebuild (or set-up) is running in another process: waiting" in waiting.stderr.readline()
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0
    assert {s["lag"] for s in json.loads(out)} == {0}


@pytest.mark.postgres
def test_two_rebuilds_started_together_both_finish(pg_url: str) -> None:
    books_db = with_books(pg_url)
    both = [rebuild_process(books_db), rebuild_process(books_db)]
    ended = [(p.wait(timeout=120), *p.communicate()) for p in both]
    assert [code for code, _, _ in ended] == [0, 0], [err for _, _, err in ended]
    status = json.loads(cli(books_db, "--json", "project", "status").stdout)
    assert {s["lag"] for s in status} == {0} and all(s["tables"] != "v1" for s in status)
    assert json.loads(cli(books_db, "books", "--json").stdout)["currencies"]["USD"]["accounts"]["cash"] == "58.00"


def schemas_like(name: str) -> list[str]:
    with psycopg.connect(PG) as conn:
        return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE lower(nspname) LIKE %s",
                                           [name.lower()])]


@pytest.mark.postgres
def test_a_bad_schema_name_is_refused_and_leaves_nothing_behind() -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL unreachable")
    for bad in ("Bad-Name", "pg_ledger", "x;drop", "a" * 64, ""):
        result = cli(f"{PG}?schema={bad}", "show", "ws1")
        assert result.exit_code == 2 and "is not a schema name" in result.stderr, (bad, result.output)
    assert schemas_like("bad-name") == schemas_like("pg_ledger") == schemas_like("x;drop") == []


@pytest.mark.postgres
def test_a_set_up_that_fails_drops_the_schema_it_made(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash half way through the first set-up (here: after the event store's tables)."""
    made = schema._create

    def crash(env: Any, parts: list[str]) -> None:
        made(env, parts)
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(schema, "_create", crash)
    result = cli(pg_url, "show", "ws1")
    assert result.exit_code == 3 and "[internal_error]" in result.stderr
    assert schemas_like(pg_url.split("schema=")[1]) == []
    monkeypatch.setattr(schema, "_create", made)
    assert cli(pg_url, "workspaces").exit_code == 0


def test_a_listing_piped_at_80_columns_never_cuts_a_workspace_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A status as long as `cancel_scheduled` squeezed the id column to "ac…"; longer ids and plan
    names dropped whole columns. A table wider than the output is printed at its own width."""
    monkeypatch.setenv("COLUMNS", "80")
    db = f"sqlite:///{tmp_path}/wide.db"
    long_id = "workspace-with-a-long-name-" + "x" * 13
    for ws in ("acme", long_id):
        assert cli(db, "add-payment-method", ws, "--payment-method", "pm_card_visa").exit_code == 0
        assert cli(db, "subscribe", ws, "--plan", "pro").exit_code == 0
    assert cli(db, "cancel", "acme").exit_code == 0
    text = cli(db, "workspaces").stdout
    assert "acme " in text and long_id in text and "cancel_scheduled" in text and "period end" in text
