"""R17 notices: an outbox of notices due (downgrade 7 days before, trial ending and ended,
payment failed) that a mailer drains exactly once; acknowledgements survive a rebuild."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.app import read_models
from adapters.cli import app
from domain.subscription import Subscription
from projections import notices
from projections.notices import KINDS, Kind, acknowledge, pending
from projections.runner import Projections
from tests.conftest import Book, utc
from tests.support import DECLINED, VISA, forms_on


@contextmanager
def outbox(b: Any) -> Iterator[Projections]:
    with read_models(b.ledger) as projections:
        projections.catch_up()
        yield projections


def due(b: Any, ws: str | None = None) -> list[dict[str, Any]]:
    with outbox(b) as p, p.engine.connect() as conn:
        return pending(conn, b.clock.now(), ws)


def kinds(rows: list[dict[str, Any]]) -> list[str]:
    return [r["kind"] for r in rows]


def test_R17_a_downgrade_notice_falls_due_7_days_before_and_is_drained_once(book: Any) -> None:
    b = forms_on(book, "team")
    b.at("2026-04-11T00:00:00")
    assert b.do("ws", "change-plan", plan="pro").ok  # applies May 1
    b.at("2026-04-23T23:00:00")
    assert due(b) == []
    b.at("2026-04-24T00:00:00")
    (notice,) = due(b)
    version = next(e.originator_version for e in b.ledger.workspace_events("ws")
                   if isinstance(e, Subscription.DowngradeNoticeDue))
    assert notice["notice_id"] == f"ws:{version}:downgrade_notice"
    assert (notice["workspace"], notice["kind"], notice["due_at"], notice["delivered_at"]) == \
        ("ws", "downgrade_notice", "2026-04-24T00:00:00Z", None)
    assert notice["detail"] == {"plan": "pro", "effective_at": "2026-05-01T00:00:00Z"}
    with outbox(b) as p:
        first = acknowledge(p.engine, notice["notice_id"], utc("2026-04-24T00:05:00"))
        again = acknowledge(p.engine, notice["notice_id"], utc("2026-04-24T09:00:00"))
        assert acknowledge(p.engine, "ws:999:downgrade_notice", utc("2026-04-24T09:00:00")) is None
    assert (first.already, again.already) == (False, True)
    assert first.delivered_at == again.delivered_at == utc("2026-04-24T00:05:00")
    assert due(b) == []
    b.at("2026-05-02T00:00:00")
    assert due(b) == [], "delivered once, never again"


def test_R17_an_acknowledgement_survives_a_rebuild_of_the_read_models(book: Any) -> None:
    b = forms_on(book, "team")
    assert b.do("ws", "change-plan", plan="pro").ok
    other = forms_on(book, "pro", ws="other")
    assert other.do("other", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-04-24T00:00:00")
    (notice,) = due(b, "ws")
    with outbox(b) as p:
        assert not acknowledge(p.engine, notice["notice_id"], b.clock.now()).already
    other.at("2026-05-01T00:00:00")
    assert kinds(due(other, "other")) == ["payment_failed"]
    with outbox(b) as p:
        tags = p.rebuild()
        assert tags["notices"] == f"v{notices.Notices.version}_2"
        with p.engine.connect() as conn:
            assert notices.find(conn, notice["notice_id"])["delivered_at"] == "2026-04-24T00:00:00Z"
            assert pending(conn, other.clock.now(), "ws") == []
            assert kinds(pending(conn, other.clock.now(), "other")) == ["payment_failed"]
        assert acknowledge(p.engine, notice["notice_id"], other.clock.now()).already


def test_R17_a_cancelled_downgrade_withdraws_its_unsent_notice(book: Any) -> None:
    b = forms_on(book, "team")
    assert b.do("ws", "change-plan", plan="pro").ok
    b.at("2026-04-25T00:00:00")
    assert kinds(due(b)) == ["downgrade_notice"]
    assert b.do("ws", "cancel-change").ok  # keep the current plan
    assert due(b) == []
    with outbox(b) as p, p.engine.connect() as conn:
        (withdrawn,) = [r for r in conn.execute(notices._outbox().select()).mappings()]
        assert withdrawn["withdrawn_at"] is not None and withdrawn["delivered_at"] is None


def test_R15_R17_a_trial_ending_notice_comes_before_the_end_and_a_conversion_withdraws_it(book: Any) -> None:
    b = book("workspace")
    assert b.do("trial", "subscribe", plan="trial").ok  # 14 days: ends April 15
    assert b.do("early", "subscribe", plan="trial").ok
    b.at("2026-04-07T23:59:00")
    assert due(b) == []
    b.at("2026-04-08T00:00:00")
    assert sorted((r["workspace"], r["kind"]) for r in due(b)) == [("early", "trial_ending"), ("trial", "trial_ending")]
    assert due(b, "trial")[0]["detail"] == {"plan": "trial", "period_end": "2026-04-15T00:00:00Z"}
    assert b.do("early", "add-payment-method", payment_method=VISA).ok
    assert b.do("early", "change-plan", plan="team", seats=2).ok
    assert due(b, "early") == [], "converted before it was sent: withdrawn"
    with outbox(b) as p:
        sent = due(b, "trial")[0]["notice_id"]
        assert not acknowledge(p.engine, sent, b.clock.now()).already
    b.at("2026-04-15T00:00:00")
    assert kinds(due(b, "trial")) == ["trial_ended"]
    assert kinds(due(b, "early")) == []


def test_R8_R12_a_failed_renewal_payment_is_noticed(book: Any) -> None:
    b = forms_on(book, "pro")
    assert b.do("ws", "add-payment-method", payment_method=DECLINED).ok
    b.at("2026-05-01T00:00:00")
    (notice,) = due(b)
    assert notice["kind"] == "payment_failed" and notice["due_at"] == "2026-05-01T00:00:00Z"
    assert notice["detail"]["invoice_id"] == b.sub("ws").open_invoice
    assert notice["detail"]["amount"] == "19.00"


def test_R17_a_new_notice_kind_is_one_registration(book: Any) -> None:
    kind = Kind("seats_changed", Subscription.SeatsChanged)
    KINDS.append(kind)
    try:
        b = book("workspace")
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
        assert b.do("ws", "subscribe", plan="team", seats=2).ok
        assert b.do("ws", "set-seats", seats=4).ok
        (row,) = due(b)
        assert (row["kind"], row["detail"]["seats"], row["detail"]["previous"]) == ("seats_changed", 4, 2)
    finally:
        KINDS.remove(kind)


def test_R17_the_cli_drains_the_outbox_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    b = Book(db, "forms", "2020-01-01T00:00:00")  # long before the system clock the CLI reads
    try:
        assert b.do("ws", "add-payment-method", payment_method=VISA).ok
        assert b.do("ws", "subscribe", plan="team").ok
        assert b.do("ws", "change-plan", plan="pro").ok
        b.at("2020-01-25T00:00:00")
    finally:
        b.close()
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, ["--db", db, *args])
        assert "Traceback" not in result.output, result.output
        return result

    out = json.loads(run("--json", "notices", "pending").stdout)
    (notice,) = out["pending"]
    assert notice["kind"] == "downgrade_notice"
    text = run("notices", "pending").stdout
    assert notice["notice_id"] in text and "downgrade_notice" in text and "plan pro" in text
    on_system_time = run("--json", "notices", "ack", notice["notice_id"])
    assert (on_system_time.exit_code, json.loads(on_system_time.stdout)["error"]["code"]) == (1, "clock_conflict")
    assert json.loads(run("--json", "notices", "pending").stdout)["pending"] == [notice]
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2019-06-01T00:00:00Z")
    before_due = json.loads(run("--json", "notices", "ack", notice["notice_id"]).stdout)
    assert before_due["error"]["code"] == "clock_conflict" and "cannot have been delivered yet" in before_due["error"]["message"]
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2020-01-25T00:05:00Z")
    first = json.loads(run("--json", "notices", "ack", notice["notice_id"]).stdout)
    assert (first["already_acknowledged"], first["delivered_at"]) == (False, "2020-01-25T00:05:00Z")
    again = run("notices", "ack", notice["notice_id"])
    assert again.exit_code == 0 and "already acknowledged" in again.stdout and "nothing changed" in again.stdout
    assert json.loads(run("--json", "notices", "pending").stdout)["pending"] == []
    assert "no notices pending" in run("notices", "pending").stdout
    unknown = run("--json", "notices", "ack", "ws:999:downgrade_notice")
    assert (unknown.exit_code, json.loads(unknown.stdout)["error"]["code"]) == (1, "not_found")
    assert run("notices", "ack", "bad id!").exit_code == 2
    assert run("project", "rebuild").exit_code == 0
    assert json.loads(run("--json", "notices", "pending").stdout)["pending"] == []
    assert "already acknowledged" in run("notices", "ack", notice["notice_id"]).stdout


def test_R8_R19_dunning_suspension_and_reactivation_are_noticed(book: Any) -> None:
    """Each failed retry is a payment_failed notice; the last step and the way back are noticed too."""
    b = forms_on(book)
    b.do("ws", "add-payment-method", payment_method=DECLINED)
    b.at("2026-05-20T00:00:00")
    assert b.sub("ws").status == "suspended"
    b.do("ws", "add-payment-method", payment_method=VISA)
    assert b.do("ws", "pay-invoice").ok
    with read_models(b.ledger) as projections:
        projections.catch_up()
        with projections.engine.connect() as conn:
            found = [n["kind"] for n in pending(conn, b.clock.now(), "ws")]
    assert found.count("payment_failed") == 4
    assert found[-2:] == ["workspace_suspended", "workspace_reactivated"]


def test_a_notice_event_that_gains_a_field_bumps_the_notices_version() -> None:
    """A notice's detail holds its event's fields: after PaymentFailed v4 added `retries`, every
    upgraded ledger's `replay rebuild --verify` found its payment_failed notices differing from
    the live ones (`"retries": null`), because the read model was not rebuilt on the upgrade."""
    from projections.notices import KINDS, RENDERED
    assert {kind.on.__name__: getattr(kind.on, "class_version", 1) for kind in KINDS} == RENDERED, \
        "an event a notice renders changed version: bump Notices.version and RENDERED together"
