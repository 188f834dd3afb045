"""The `subledger` command line, in process (typer's CliRunner) and as a real subprocess:
exit codes 0/1/2, JSON output, clear errors instead of tracebacks, refusals record nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"
INJECTION = "ws'; DROP TABLE x;--"


class Cli:
    """Runs `subledger --db <tmp> ...` in process."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = f"sqlite:///{tmp_path}/cli.db"
        self.runner = CliRunner()

    def __call__(self, *args: str, db: bool = True) -> Any:
        result = self.runner.invoke(app, [*(["--db", self.db] if db else []), *args])
        assert "Traceback" not in result.output, result.output
        return result

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self("--json", *args)
        return result.exit_code, json.loads(result.stdout)

    def version(self, workspace: str = "ws1") -> int:
        return self.json("show", workspace)[1].get("version", 0)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def subscribed(cli: Cli) -> Cli:
    assert cli("add-payment-method", "ws1", "--payment-method", "pm_card_visa").exit_code == 0
    assert cli("subscribe", "ws1", "--plan", "pro", "--interval", "month").exit_code == 0
    return cli


def run_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


# ------------------------------------------------------------------ demo


def test_demo_narrates_the_seed_examples_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    for text in ("-12.67", "32.67", "20.00  due now (USD)", "-121.44", "50,000 operations left", "OVER SEAT LIMIT",
                 "19.00 x 1 x 20/30 days = 12.666667 -> 12.67", "steps as expected"):
        assert text in result.output
    assert (tmp_path / "subledger-demo.db").exists()


def test_demo_as_a_subprocess_runs_twice_on_a_fresh_file(tmp_path: Path) -> None:
    for _ in range(2):
        done = run_subprocess("demo", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert (tmp_path / "subledger-demo.db").exists()


def test_a_demo_cut_short_leaves_the_last_whole_demo_database_and_nothing_else(tmp_path: Path) -> None:
    assert run_subprocess("demo", cwd=tmp_path).returncode == 0
    whole = (tmp_path / "subledger-demo.db").read_bytes()
    cut = subprocess.Popen([sys.executable, "-m", "adapters.cli", "demo"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert cut.stdout is not None and "subledger demo" in cut.stdout.readline()
    cut.stdout.close()  # as `subledger demo | head -1` does
    assert cut.wait(60) != 0 and "Traceback" not in (cut.stderr.read() if cut.stderr else "")
    assert [p.name for p in tmp_path.iterdir()] == ["subledger-demo.db"]
    assert (tmp_path / "subledger-demo.db").read_bytes() == whole
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "subledger-demo.db").stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file


def test_console_script_runs_a_scenario(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "subledger"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "adapters.cli"]
    done = subprocess.run([*command, "scenario", "run", str(SCENARIOS / "forms_upgrade.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["step"] for line in lines] == list(range(1, len(lines) + 1))
    assert lines[4]["invoice"]["amount_due"] == "20.00"


# ------------------------------------------------------------------ scenario run and catalog check


def test_scenario_run_exit_codes(cli: Cli, tmp_path: Path) -> None:
    assert cli("scenario", "run", str(SCENARIOS / "forms_downgrade.json"), db=False).exit_code == 0
    failing = tmp_path / "failing.json"
    failing.write_text(json.dumps({"catalog": "forms", "steps": [
        {"at": "2026-04-01", "workspace": "a", "do": "set-members", "with": {"members": 2}, "expect": {"ok": False}}]}))
    result = cli("scenario", "run", str(failing), db=False)
    assert result.exit_code == 1
    assert "step 1 (set-members): ok: expected false, got true" in result.stderr
    for content in ('{"catalog": "forms", "steps": [',
                    '{"catalog": "forms", "steps": [{"at": "2026-04-01", "workspace": "a", "do": "fly"}]}',
                    '{"catalog": "forms", "steps": [{"at": "2026-04-02", "workspace": "a", "do": "show"},'
                    ' {"at": "2026-04-01", "workspace": "a", "do": "show"}]}'):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        result = cli("scenario", "run", str(bad), db=False)
        assert result.exit_code == 2
        assert "invalid scenario" in result.stderr and result.stdout == ""


def test_scenario_run_keeps_events_in_the_given_database(cli: Cli) -> None:
    assert cli("scenario", "run", str(SCENARIOS / "forms_upgrade.json")).exit_code == 0
    code, state = cli.json("show", "acme")
    assert (code, state["plan"]) == (0, "team")


def test_catalog_check_good_and_broken(cli: Cli, tmp_path: Path) -> None:
    good = cli("catalog", "check", str(SCENARIOS / "newsletter.toml"), db=False)
    assert good.exit_code == 0 and "ok: catalog newsletter" in good.stdout
    code, summary = cli.json("catalog", "check", "operations")
    assert (code, summary["catalog"], summary["policy"]["upgrade_credit"]) == (0, "operations", "unused_operations")
    syntax = tmp_path / "syntax.toml"
    syntax.write_text('id = "x\n')
    result = cli("catalog", "check", str(syntax), db=False)
    assert result.exit_code == 2 and "not valid TOML" in result.stderr and "line 1" in result.stderr
    schema = tmp_path / "schema.toml"
    schema.write_text('id = "x"\nversion = "1"\nname = "X"\ncurrency = "USD"\n[policy]\ndowngrade_timing = "later"\n'
                      '[[plans]]\nid = "p"\nname = "P"\nrank = 0\nkind = "paid"\nstorage_gb = 1\n')
    result = cli("catalog", "check", str(schema), db=False)
    assert result.exit_code == 2
    assert "2 problem(s)" in result.stderr and "policy.downgrade_timing" in result.stderr
    assert "paid plan 'p' needs prices or tiers" in result.stderr
    assert cli("catalog", "check", str(tmp_path / "missing.toml"), db=False).exit_code == 2


def test_the_catalog_example_in_the_docs_is_the_checked_file() -> None:
    doc = (ROOT / "docs" / "catalogs.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == (SCENARIOS / "newsletter.toml").read_text()


# ------------------------------------------------------------------ commands


def test_R13_commands_print_step_shaped_json(subscribed: Cli) -> None:
    code, preview = subscribed.json("preview", "ws1", "--do", "change-plan", "--plan", "team")
    assert (code, preview["do"], preview["state"]["plan"]) == (0, "preview", "pro")
    code, out = subscribed.json("change-plan", "ws1", "--plan", "team", "--reason", "needs webhooks")
    assert code == 0 and out["ok"] and out["error"] is None
    assert "PlanUpgraded" in out["events"]
    assert [line["kind"] for line in out["invoice"]["lines"]] == ["plan_credit", "plan_charge"]
    amounts = [(line["amount"], line["formula"]) for line in out["invoice"]["lines"]]
    assert amounts == [(line["amount"], line["formula"]) for line in preview["invoice"]["lines"]]
    assert out["state"]["plan"] == "team"


def test_a_command_reports_the_instant_its_first_event_was_recorded_at(subscribed: Cli) -> None:
    code, out = subscribed.json("change-plan", "ws1", "--plan", "team")
    trail = [json.loads(row) for row in subscribed("audit", "ws1", "--format", "jsonl").stdout.splitlines()]
    first = next(row for row in trail if row["event_type"] == out["events"][0] and row["version"] > 4)
    assert code == 0 and out["at"] == first["occurred_at"]


def test_human_output_shows_each_line_with_its_formula(subscribed: Cli) -> None:
    result = subscribed("change-plan", "ws1", "--plan", "team")
    assert result.exit_code == 0
    assert "plan_credit" in result.stdout and "days =" in result.stdout and "due now" in result.stdout


def test_a_refused_command_exits_1_and_records_nothing(subscribed: Cli) -> None:
    before = subscribed.version()
    code, out = subscribed.json("change-plan", "ws1", "--plan", "team", "--actor", "bob", "--role", "member")
    assert (code, out["ok"], out["error"]["code"], out["events"]) == (1, False, "not_authorized", [])
    result = subscribed("change-plan", "ws1", "--plan", "pro")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: already on Pro") and "[already_on_plan]" in result.stderr
    assert subscribed.version() == before


def test_unknown_plan_is_refused_with_the_known_plans(subscribed: Cli) -> None:
    before = subscribed.version()
    code, out = subscribed.json("change-plan", "ws1", "--plan", "platinum")
    assert (code, out["error"]["code"]) == (2, "unknown_plan")
    assert "free, pro, team, scale" in out["error"]["message"]
    assert subscribed.version() == before


def test_idempotency_key_replays_or_conflicts(subscribed: Cli) -> None:
    code, first = subscribed.json("change-plan", "ws1", "--plan", "team", "--idempotency-key", "k1")
    code2, again = subscribed.json("change-plan", "ws1", "--plan", "team", "--idempotency-key", "k1")
    assert (code, code2, again["replayed"], again["invoice"]) == (0, 0, True, first["invoice"])
    code, out = subscribed.json("change-plan", "ws1", "--plan", "pro", "--idempotency-key", "k1")
    assert (code, out["error"]["code"]) == (1, "idempotency_conflict")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set-seats", "ws1", "--seats", "-3"], "greater than or equal to 1"),
        (["set-seats", "ws1", "--seats", "2.5"], "'2.5' is not a whole number"),
        (["set-seats", "ws1", "--seats", "1e3"], "is not a whole number"),
        (["set-seats", "ws1", "--seats", "9" * 40], "is not a whole number"),
        (["set-seats", "ws1", "--seats", "99999999999999999999"], "less than or equal to 100000"),
        (["set-members", "ws1", "--members", "-1"], "greater than or equal to 0"),
        (["record-usage", "ws1", "--operations", "0"], "greater than 0"),
        (["report-storage", "ws1", "--gb", "nan"], "not a number of GB"),
        (["report-storage", "ws1", "--gb", "1e400"], "gb"),
        (["report-storage", "ws1", "--gb", "-1"], "not a number of GB"),
        (["set-seats", INJECTION, "--seats", "3"], "workspace id"),
        (["change-plan", "ws1", "--plan", "pro'; DROP TABLE x;--"], "plan"),
        (["change-plan", "ws1", "--plan", "team", "--idempotency-key", "k 1; --"], "--idempotency-key"),
        (["change-plan", "ws1", "--plan", "team", "--interval", "weekly"], "interval"),
        (["change-plan", "ws1", "--plan", "team", "--role", "system"], "--role must be one of"),
        (["change-plan", "ws1", "--plan", "team", "--role", "root"], "--role must be one of"),
        (["change-plan", "ws1", "--plan", "team", "--actor", "<script>"], "actor"),
        (["add-payment-method", "ws1", "--payment-method", "4242424242424242"], "payment_method"),
        (["set-contract", "ws1", "--contract", "forever"], "contract"),
        (["preview", "ws1", "--do", "fly"], "unknown command 'fly'"),
        (["preview", "ws1", "--do", "set-seats", "--members", "3"], "set-seats: seats is required; unknown field 'members'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error_and_records_nothing(subscribed: Cli, args: list[str],
                                                                 message: str) -> None:
    before = subscribed.version()
    code, out = subscribed.json(*args)
    assert (code, out["ok"], out["error"]["code"]) == (2, False, "invalid_request")
    assert message in out["error"]["message"]
    human = subscribed(*args)
    assert human.exit_code == 2 and human.stderr.startswith("error: ") and len(human.stderr.splitlines()) == 1
    assert subscribed.version() == before
    assert subscribed.json("show", INJECTION.replace("'", ""))[0] == 2


def test_bad_settings_exit_2_without_a_traceback(cli: Cli, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in [
        (["--db", "mysql://x/y", "show", "ws1"], "unsupported database URL"),
        (["--db", cli.db, "--catalog", "gold.toml", "show", "ws1"], "gold.toml: no such file, and not a built-in catalog (forms, workspace, operations)"),
        (["--db", cli.db, "--catalog", str(SCENARIOS / "forms_upgrade.json"), "show", "ws1"], "not valid TOML"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output


def test_show_and_advance(subscribed: Cli) -> None:
    code, state = subscribed.json("show", "ws1")
    assert (code, state["plan"], state["status"]) == (0, "pro", "active")
    missing = subscribed("show", "nobody")
    assert (missing.exit_code, missing.stderr.strip()) == (1, "error: nobody: no such workspace [not_found]")
    code, out = subscribed.json("advance")
    assert (code, out["due"]) == (0, {})


def test_show_reads_the_plan_state_read_model_kept_current_inline(subscribed: Cli) -> None:
    """Every command catches the read models up, so `show`, `invoices` and `audit` agree with the ledger."""
    assert subscribed("change-plan", "ws1", "--plan", "team").exit_code == 0
    code, state = subscribed.json("show", "ws1")
    assert (code, state["plan"]) == (0, "team")
    invoices = subscribed("invoices", "ws1", "--json")
    assert invoices.exit_code == 0 and json.loads(invoices.stdout)["invoices"][-1]["purpose"] == "upgrade"
    assert subscribed("audit", "verify").exit_code == 0


def test_a_commands_json_state_is_the_workspace_as_it_left_it_not_a_later_writers(tmp_path, monkeypatch):
    """Another process sets 41 members between this command (40) and its output."""
    from adapters.app import build_ledger
    from domain.commands import Actor, parse_command
    from domain.ledger import Ledger

    db = f"sqlite:///{tmp_path}/race.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "set-members", "ws", "--members", "1"]).exit_code == 0
    handle = Ledger.handle

    def then_another_process(self, *args, **kwargs):
        result = handle(self, *args, **kwargs)
        other = build_ledger(db)
        try:
            assert handle(other, "ws", parse_command("set-members", {"members": 41}), Actor(id="eve", role="admin")).ok
        finally:
            other.close()
        return result

    monkeypatch.setattr(Ledger, "handle", then_another_process)
    out = json.loads(runner.invoke(app, ["--db", db, "--json", "set-members", "ws", "--members", "40"]).stdout)
    assert (out["ok"], out["state"]["members"]) == (True, 40)
    monkeypatch.undo()
    assert json.loads(runner.invoke(app, ["--db", db, "--json", "show", "ws"]).stdout)["members"] == 41


def test_a_scenario_nested_too_deeply_is_an_invalid_file_not_an_internal_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"catalog": "forms", "steps": [], "title": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = CliRunner().invoke(app, ["scenario", "run", str(deep)])
    assert result.exit_code == 2 and "nested too deeply" in result.stderr


def test_a_scenario_number_of_thousands_of_digits_is_an_invalid_file_not_an_internal_error(tmp_path):
    huge = tmp_path / "huge.json"
    huge.write_text('{"catalog": "forms", "steps": [{"workspace": "ws", "do": "set-seats", "with": {"seats": '
                    + "9" * 5000 + "}}]}")
    result = CliRunner().invoke(app, ["scenario", "run", str(huge)])
    assert result.exit_code == 2 and "a number of 5000 digits" in result.stderr


@pytest.mark.parametrize("interval", ["1e309", "nan", "0"])
def test_advance_loop_refuses_an_interval_it_cannot_wait(tmp_path, interval):
    result = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path}/l.db", "advance", "--loop", "--interval", interval])
    assert result.exit_code == 2 and "--interval" in result.output


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])  # was "No such option: --version"
    assert result.exit_code == 0 and result.stdout.startswith("subledger ")
