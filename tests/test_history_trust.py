"""History nobody can quietly rewrite: a catalog is its content, and test time never enters a
ledger kept on the system clock (nor the other way round)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.app import build_ledger
from adapters.cli import app
from domain.catalog import CatalogConflict, load_catalog
from domain.commands import parse_command
from domain.errors import LedgerError
from domain.ledger import SystemClock, TestClock
from replay.history import Catalogs
from tests.conftest import ADMIN, utc
from tests.support import VISA, catalog_variant

ROOT = Path(__file__).resolve().parents[1]


def impersonating_forms(tmp_path: Path) -> Path:
    """The built-in forms catalog, same id and version, Team at 1.00."""
    text = (ROOT / "domain" / "catalogs" / "forms.toml").read_text()
    assert '"49.00"' in text
    path = tmp_path / "forms.toml"
    path.write_text(text.replace('"49.00"', '"1.00"', 1))
    return path


def test_catalog_conflict_a_file_claiming_a_builtin_id_and_version_is_refused(tmp_path):
    with pytest.raises(CatalogConflict, match="already exists with other content"):
        load_catalog(impersonating_forms(tmp_path))
    checked = CliRunner().invoke(app, ["--json", "catalog", "check", str(impersonating_forms(tmp_path))])
    assert checked.exit_code == 2 and '"catalog_conflict"' in checked.output


def test_catalog_conflict_a_custom_catalog_cannot_change_under_its_recorded_version(tmp_path, db_url):
    original = catalog_variant(tmp_path, "forms", "newsletter")
    clock = TestClock(utc("2026-04-01T00:00:00"))
    ledger = build_ledger(db_url, catalog=original, clock=clock)
    ledger.handle("ws", parse_command("add-payment-method", {"payment_method": VISA}), ADMIN)
    first = ledger.handle("ws", parse_command("subscribe", {"plan": "pro", "interval": "month"}), ADMIN)
    assert {e.catalog_hash for e in first.events} == {load_catalog(original).content_hash}
    ledger.close()
    cheaper = Path(original).read_text().replace('"19.00"', '"9.00"', 1)
    Path(original).write_text(cheaper)
    ledger = build_ledger(db_url, catalog=original, clock=clock)
    try:
        before = ledger.get("ws").version
        with pytest.raises(LedgerError) as refused:
            ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN)
        assert refused.value.code == "catalog_conflict"
        assert ledger.get("ws").version == before
    finally:
        ledger.close()
    checked = CliRunner().invoke(app, ["--db", db_url, "catalog", "check", str(original)])
    assert checked.exit_code == 2 and checked.stderr.startswith("error: catalog newsletter version")
    assert checked.stderr.rstrip().endswith("[catalog_conflict]")
    assert CliRunner(env={"SUBLEDGER_DB": db_url}).invoke(app, ["catalog", "check", str(original)]).exit_code == 0, \
        "without --db only the built-in catalogs are checked: the file check stays offline"


def test_catalog_mismatch_replay_refuses_a_fact_whose_catalog_it_does_not_hold(book):
    """Replay prices a fact with the catalog it records, or refuses with a stable code. Before,
    the code was not registered, and verify reported a ValueError for every invoice."""
    b = book("forms", "2026-04-01T00:00:00")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    [fact] = b.ledger.workspace_events("ws")[-1:]
    edited = SimpleNamespace(catalog_version=fact.catalog_version, catalog_hash="sha256:" + "0" * 64)
    unknown = SimpleNamespace(catalog_version="forms@1999-01-01", catalog_hash=None)
    for tampered in (edited, unknown):
        with pytest.raises(LedgerError) as refused:
            Catalogs(b.ledger).of(tampered)
        assert refused.value.code == "catalog_mismatch"


def test_catalog_conflict_a_new_version_may_not_change_the_currency(tmp_path, db_url):
    """A workspace billed in USD is never billed in EUR by a new version of its catalog: the
    USD it paid would be credited one-for-one in EUR. A new version in USD is taken."""
    original = catalog_variant(tmp_path, "forms", "newsletter")
    clock = TestClock(utc("2026-04-01T00:00:00"))
    ledger = build_ledger(db_url, catalog=original, clock=clock)
    ledger.handle("ws", parse_command("add-payment-method", {"payment_method": VISA}), ADMIN)
    assert ledger.handle("ws", parse_command("subscribe", {"plan": "pro", "interval": "month"}), ADMIN).ok
    ledger.close()
    text = Path(original).read_text().replace('version = "2026-11-23"', 'version = "2027-01-01"', 1)
    euros = tmp_path / "newsletter-eur.toml"
    euros.write_text(text.replace('currency = "USD"', 'currency = "EUR"', 1))
    ledger = build_ledger(db_url, catalog=str(euros), clock=clock)
    try:
        before = ledger.get("ws").version
        with pytest.raises(LedgerError) as refused:
            ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN)
        assert refused.value.code == "catalog_conflict" and "bills in USD" in refused.value.message
        assert ledger.get("ws").version == before
    finally:
        ledger.close()
    checked = CliRunner().invoke(app, ["--db", db_url, "catalog", "check", str(euros)])
    assert checked.exit_code == 2 and checked.stderr.rstrip().endswith("[catalog_conflict]")
    dollars = tmp_path / "newsletter-next.toml"
    dollars.write_text(text)
    ledger = build_ledger(db_url, catalog=str(dollars), clock=clock)
    try:
        assert ledger.handle("ws", parse_command("change-plan", {"plan": "team"}), ADMIN).ok
    finally:
        ledger.close()


@pytest.mark.parametrize(("first", "second"), [(SystemClock(), TestClock(utc("2020-01-01T00:00:00"))),
                                              (TestClock(utc("2026-01-01T00:00:00")), SystemClock())])
def test_clock_conflict_one_kind_of_clock_writes_a_ledger(db_url, first, second):
    kept = build_ledger(db_url, clock=first)
    kept.handle("ws", parse_command("add-payment-method", {"payment_method": VISA}), ADMIN)
    kept.close()
    intruder = build_ledger(db_url, clock=second)
    try:
        with pytest.raises(LedgerError) as refused:
            intruder.handle("other", parse_command("add-payment-method", {"payment_method": VISA}), ADMIN)
        assert refused.value.code == "clock_conflict"
        assert intruder.workspaces() == ["ws"]
    finally:
        intruder.close()


def test_clock_conflict_scenarios_and_the_demo_never_write_into_a_real_ledger(tmp_path):
    url = f"sqlite:///{tmp_path}/real.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", url, "add-payment-method", "ws", "--payment-method", VISA]).exit_code == 0
    scenario = runner.invoke(app, ["scenario", "run", str(ROOT / "tests" / "scenarios" / "forms_upgrade.json"),
                                   "--db", url])
    demo = runner.invoke(app, ["demo", "--db", url])
    for result in (scenario, demo):
        assert result.exit_code != 0
    ledger = build_ledger(url)
    try:
        assert ledger.workspaces() == ["ws"]
        assert {e.channel for e in ledger.workspace_events("ws")} == {"cli"}
    finally:
        ledger.close()


def test_R3_scenarios_record_channel_scenario(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    done = CliRunner().invoke(app, ["scenario", "run", str(ROOT / "tests" / "scenarios" / "forms_upgrade.json"),
                                    "--db", url])
    assert done.exit_code == 0, done.output
    ledger = build_ledger(url, clock=TestClock(utc("2030-01-01T00:00:00")))
    try:
        channels = {e.channel for ws in ledger.workspaces() for e in ledger.workspace_events(ws)}
        assert "scenario" in channels and "api" not in channels
    finally:
        ledger.close()


def test_clock_conflict_a_pinned_cli_clock_cannot_backdate_a_real_ledger(tmp_path, monkeypatch):
    """SUBLEDGER_TEST_CLOCK serves test ledgers from the command line; a real one refuses it."""
    url = f"sqlite:///{tmp_path}/real.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", url, "add-payment-method", "ws", "--payment-method", VISA]).exit_code == 0
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2020-01-01T00:00:00Z")
    backdated = runner.invoke(app, ["--db", url, "--json", "subscribe", "ws", "--plan", "pro"])
    assert backdated.exit_code == 1 and '"clock_conflict"' in backdated.output
    advanced = runner.invoke(app, ["--db", url, "advance"])  # nothing due: it said "nothing due at 2020-..."
    assert advanced.exit_code == 1 and "clock_conflict" in advanced.output, advanced.output


def test_clock_conflict_a_pinned_cli_clock_cannot_run_a_workspace_backwards(tmp_path, monkeypatch):
    """On a test ledger too, a workspace's facts stay in time order: an instant pinned before its
    last fact is refused and records nothing, so `replay as-of` never meets a fact out of order."""
    url = f"sqlite:///{tmp_path}/test.db"
    runner = CliRunner()
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-04-30T00:00:00Z")
    assert runner.invoke(app, ["--db", url, "add-payment-method", "ws", "--payment-method", VISA]).exit_code == 0
    assert runner.invoke(app, ["--db", url, "set-members", "ws", "--members", "2"]).exit_code == 0
    before = runner.invoke(app, ["--db", url, "--json", "audit", "ws"]).output
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-01-01T00:00:00Z")
    back = runner.invoke(app, ["--db", url, "--json", "set-members", "ws", "--members", "3"])
    assert back.exit_code == 1 and '"clock_conflict"' in back.output, back.output
    assert "nothing is recorded before it" in back.output
    assert runner.invoke(app, ["--db", url, "--json", "audit", "ws"]).output == before
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-04-30T00:00:00Z")
    assert runner.invoke(app, ["--db", url, "set-members", "ws", "--members", "3"]).exit_code == 0, "the same instant is fine"


def test_a_system_clock_behind_a_workspace_by_another_hosts_skew_records_at_the_last_facts_instant(tmp_path):
    url = f"sqlite:///{tmp_path}/real.db"

    class Behind(SystemClock):
        def now(self):  # a host whose clock is a second behind the one that wrote last
            return super().now() - timedelta(seconds=1)

    ahead = build_ledger(url, clock=SystemClock())
    behind = build_ledger(url, clock=Behind())
    try:
        assert ahead.handle("ws", parse_command("set-members", {"members": 1}), ADMIN).ok
        last = ahead.get("ws").modified_on
        assert behind.handle("ws", parse_command("set-members", {"members": 2}), ADMIN).ok
        times = [e.timestamp for e in behind.workspace_events("ws")]
        assert times == sorted(times) and times[-1] == last
    finally:
        ahead.close()
        behind.close()


def test_clock_conflict_is_found_before_the_gateway_is_asked(tmp_path):
    """A test clock behind the workspace is refused before any charge is asked about or canceled,
    so the refusal never leaves the gateway and the ledger apart."""
    url = f"sqlite:///{tmp_path}/test.db"
    ahead = build_ledger(url, clock=TestClock(utc("2026-04-10T00:00:00")))
    behind = build_ledger(url, clock=TestClock(utc("2026-04-05T00:00:00")))
    try:
        ahead.handle("ws", parse_command("add-payment-method", {"payment_method": "pm_card_authenticationRequired"}),
                     ADMIN)
        waiting = ahead.handle("ws", parse_command("subscribe", {"plan": "pro", "interval": "month"}), ADMIN)
        assert waiting.error.code == "payment_action_required"
        (charge,) = ahead.payments.charges("ws")
        for act in (lambda: behind.advance_workspace("ws"), lambda: behind.abandon_payment("ws")):
            with pytest.raises(LedgerError) as refused:
                act()
            assert refused.value.code == "clock_conflict"
        assert ahead.payments.charges("ws") == [charge], "the gateway was not asked to cancel"
        assert ahead.get("ws").pending_charges
    finally:
        ahead.close()
        behind.close()
