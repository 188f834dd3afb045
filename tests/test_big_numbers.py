"""Numbers a catalog or a command may hold fit everything that stores them: a catalog count beyond
a billion is refused before anything is recorded, counts beyond 32 bits are kept by every read
model, and a recorded command is reported as recorded even when the read models fail after it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.app import build_ledger
from adapters.cli import app
from domain.catalog import MAX_COUNT, Catalog, CatalogError, parse_catalog
from domain.commands import parse_command
from domain.errors import AdvanceIncomplete
from domain.ledger import TestClock
from projections.runner import Projections
from adapters.settings import eventsourcing_env
from tests.conftest import ADMIN, Book, utc
from tests.readmodels import check_against_ledger
from tests.support import BIG, VISA, refused

CATALOG = """id = "big"
version = "1"
name = "Big"
currency = "USD"
[[plans]]
id = "seat"
name = "Seat"
rank = {rank}
kind = "paid"
per_seat = true
max_seats = {seats}
prices = {{ month = "1.00" }}
storage_gb = {storage}
ai_credits_per_seat = {ai}
[[credit_packs]]
id = "pack"
name = "Pack"
credits = {credits}
price = "5.00"
"""
FITS = {"rank": 1, "seats": 1000, "storage": MAX_COUNT, "ai": MAX_COUNT, "credits": MAX_COUNT}


def catalog(tmp_path: Path, **over: int) -> Path:
    path = tmp_path / "big.toml"
    path.write_text(CATALOG.format(**{**FITS, **over}))
    return path


@pytest.mark.parametrize("field", ["rank", "seats", "storage", "ai", "credits"])
def test_a_catalog_count_beyond_a_billion_is_refused_and_records_nothing(tmp_path: Path, field: str) -> None:
    path = catalog(tmp_path, **{field: 10**20})
    checked = CliRunner().invoke(app, ["catalog", "check", str(path)])
    assert checked.exit_code == 2 and "1000000000" in checked.stderr, checked.stderr
    db = f"sqlite:///{tmp_path}/ledger.db"
    run = CliRunner().invoke(app, ["--db", db, "--catalog", str(path), "subscribe", "ws", "--plan", "seat"])
    assert run.exit_code == 2 and "at most 1000000000" in run.stderr, run.stderr
    assert CliRunner().invoke(app, ["--db", db, "show", "ws"]).exit_code == 1, "nothing was recorded"


def test_a_published_catalog_beyond_the_bounds_is_still_read_back_as_recorded(tmp_path: Path) -> None:
    """The bounds are for files: a ledger that recorded a bigger number before keeps working."""
    from domain.catalog import Catalog, parse_catalog

    published = parse_catalog(CATALOG.format(**FITS)).model_dump(mode="json")
    published["plans"][0]["storage_gb"] = 5 * 10**9
    assert Catalog.model_validate(published).plans[0].storage_gb == 5 * 10**9


def test_a_trial_of_more_than_ten_years_is_refused(tmp_path: Path) -> None:
    text = CATALOG.format(**FITS) + '[[plans]]\nid = "t"\nname = "T"\nrank = 2\nkind = "trial"\nstorage_gb = 1\n' \
        'trial_days = 3661\n'
    (tmp_path / "trial.toml").write_text(text)
    checked = CliRunner().invoke(app, ["catalog", "check", str(tmp_path / "trial.toml")])
    assert checked.exit_code == 2 and "3660" in checked.stderr, checked.stderr


def test_counts_beyond_32_bits_are_kept_by_every_read_model(db_url: str, tmp_path: Path) -> None:
    """5 seats of a billion AI credits each, and three packs of a billion: 5e9 and 3e9 credits."""
    ledger = build_ledger(db_url, catalog=catalog(tmp_path), clock=TestClock(utc("2026-04-01T00:00:00")))
    try:
        for command, args in (("add-payment-method", {"payment_method": "pm_card_visa"}),
                              ("subscribe", {"plan": "seat", "seats": 5}),
                              *[("buy-ai-credits", {"pack": "pack"})] * 3):
            assert ledger.handle("ws", parse_command(command, args), ADMIN).ok
        with Projections(eventsourcing_env(db_url), source=ledger) as p:
            p.catch_up()
            check_against_ledger(ledger, p.engine)
        shown = CliRunner().invoke(app, ["--db", db_url, "--json", "show", "ws"])
        state = json.loads(shown.stdout)
        assert (state["ai_credits_granted"], state["ai_credits_purchased"]) == (5 * 10**9, 3 * 10**9), state
    finally:
        ledger.close()


def test_a_recorded_command_is_reported_recorded_when_the_read_models_fail_after_it(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Reporting it as failed would invite a retry that buys twice."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "add-payment-method", "ws", "--payment-method", "pm_card_visa"]).exit_code == 0

    def broken(ledger: Any) -> None:
        raise RuntimeError("value out of range for the read model\nSQL: INSERT ...")

    monkeypatch.setattr("adapters.app.catch_up", broken)
    bought = runner.invoke(app, ["--db", db, "--json", "subscribe", "ws", "--plan", "pro"])
    assert bought.exit_code == 0, bought.stderr
    assert json.loads(bought.stdout)["ok"] is True
    assert "[read_models_behind]" in bought.stderr and "value out of range" in bought.stderr
    assert "SQL:" not in bought.stderr


def test_a_per_seat_price_whose_largest_line_outgrows_the_amount_columns_is_refused(tmp_path: Path) -> None:
    text = CATALOG.format(**FITS).replace('prices = { month = "1.00" }', 'prices = { month = "1000000000.00" }')  # x 1000 seats
    (tmp_path / "dear.toml").write_text(text)
    checked = CliRunner().invoke(app, ["catalog", "check", str(tmp_path / "dear.toml")])
    assert checked.exit_code == 2 and "plans[0].prices.month x max_seats" in checked.stderr, checked.stderr



def on_a_catalog_recorded_before_the_renewal_bound(book):
    """`catalog check` refuses BIG now (a renewal of its Team seats and its add-on would reach
    10^12); a ledger that recorded it before reads it back as it was."""
    assert "the dearest add-on" in str(pytest.raises(CatalogError, parse_catalog, BIG).value)
    b = book("forms", "2026-04-01T00:00:00")
    b.ledger.catalogs["big"], b.ledger.default_catalog = Catalog.model_validate(tomllib.loads(BIG)), "big"
    return b


def test_a_bill_whose_total_the_ledger_cannot_record_is_refused_before_any_charge(book, tmp_path):
    """Each line is under the largest amount, their sum is not: the charge was requested, then the
    database's amount column refused it, leaving a charge pending that no read model could hold."""
    b = on_a_catalog_recorded_before_the_renewal_bound(book)
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="a", seats=1).ok
    assert b.do("ws", "set-storage-addon", addon="huge").ok
    b.at("2026-04-30T00:00:00")
    result = refused(b, "ws", "invalid_request", "change-plan", plan="b", seats=100_000, interval="year")
    assert "the ledger records amounts under 1,000,000,000,000" in result.error.message
    assert not b.sub("ws").pending_charges


def test_a_workspace_whose_renewal_fails_never_stops_the_others_renewals(book, tmp_path):
    """The scheduler stopped at the first workspace whose due items failed, every round, so the
    workspaces after it were never renewed. It passes over it, renews the rest, and names it."""
    b = on_a_catalog_recorded_before_the_renewal_bound(book)
    for ws in ("aaa-whale", "zzz-payer"):
        assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    assert b.do("aaa-whale", "subscribe", plan="b", seats=1).ok
    assert b.do("aaa-whale", "set-storage-addon", addon="huge").ok
    assert b.do("aaa-whale", "set-seats", seats=100_000).ok  # its renewal would bill 1,999,999,899,999.00
    assert b.do("zzz-payer", "subscribe", plan="a", seats=2).ok
    with pytest.raises(AdvanceIncomplete) as refused_at:
        b.at("2026-06-02T00:00:00")
    assert list(refused_at.value.failed) == ["aaa-whale"] and refused_at.value.code == "invalid_request"
    assert b.sub("zzz-payer").period_end == utc("2026-07-01T00:00:00")
    assert b.sub("aaa-whale").period_end == utc("2026-05-01T00:00:00")


def test_advance_names_the_workspace_it_passed_over_in_its_one_json_document(tmp_path):
    """`advance --json` printed the round and then the error, two documents; it prints one, with
    every workspace it passed over under `failed`, and exits 1."""
    url = f"sqlite:///{tmp_path}/whale.db"
    b = Book(url, "forms", "2026-04-01T00:00:00")
    b.ledger.catalogs["big"], b.ledger.default_catalog = Catalog.model_validate(tomllib.loads(BIG)), "big"
    for ws in ("aaa-whale", "zzz-payer"):
        assert b.do(ws, "add-payment-method", payment_method=VISA).ok
    assert b.do("aaa-whale", "subscribe", plan="b", seats=100_000).ok
    assert b.do("aaa-whale", "set-storage-addon", addon="huge").ok
    assert b.do("zzz-payer", "subscribe", plan="a", seats=2).ok
    b.ledger.close()
    result = CliRunner().invoke(app, ["--db", url, "--json", "advance"], env={"SUBLEDGER_TEST_CLOCK": "2026-05-02T00:00:00Z"})
    round_ = json.loads(result.stdout)
    assert result.exit_code == 1 and round_["ok"] is False
    assert list(round_["failed"]) == ["aaa-whale"] and round_["failed"]["aaa-whale"]["code"] == "invalid_request"
    assert "PeriodRenewed" in round_["due"]["zzz-payer"]


def test_only_a_refusal_or_a_bug_of_this_code_is_passed_over_never_the_infrastructure():
    """A wrong cipher key fails every workspace's load with the library's MapperDeserialisationError
    (a ValueError): "every other workspace was advanced" would be false, so it is not passed over."""
    from eventsourcing.persistence import MapperDeserialisationError
    from sqlalchemy.exc import NoSuchColumnError

    from domain.errors import LedgerError, about_the_workspace
    assert about_the_workspace(LedgerError("invalid_request", "x")) and about_the_workspace(KeyError("plan"))
    assert not about_the_workspace(MapperDeserialisationError("no key")) and not about_the_workspace(NoSuchColumnError())
