"""A tamper-evident event store (docs/audit.md), on SQLite and PostgreSQL.

Each stored event is linked into its stream's hash chain in the transaction that writes it.
Editing, deleting, inserting or reordering stored events behind the ledger's back makes
`subledger audit verify` exit 1 naming the workspace and version; `project rebuild` refuses
to rebuild from them unless forced; existing stores are linked once on first upgrade.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from adapters.cli import app
from adapters.demo import run_demo
from adapters.settings import cipher_env, eventsourcing_env
from domain.subscription import workspace_uuid
from projections.audit_trail import AuditTrail
from projections.journal import trial_balance
from projections.store import sqlalchemy_url
from replay.verify_chain import digest
from tests.conftest import Book
from tests.support import VISA

ROOT = Path(__file__).resolve().parent.parent


class StoredEvents:
    """The events table, edited with raw SQL the way someone with database access could."""

    def __init__(self, db_url: str) -> None:
        self.pg = db_url.startswith("postgres")
        self.engine = create_engine(sqlalchemy_url(eventsourcing_env(db_url)))
        self.table = "subledger_events" if self.pg else "stored_events"
        self.position = "notification_id" if self.pg else "rowid"

    def key(self, workspace: str) -> Any:
        return workspace_uuid(workspace) if self.pg else workspace_uuid(workspace).hex

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement.format(t=self.table, pos=self.position)), params)
            return list(result) if result.returns_rows else []

    def versions(self, workspace: str) -> dict[int, str]:
        rows = self.sql("SELECT originator_version, topic FROM {t} WHERE originator_id = :o ORDER BY 1",
                        o=self.key(workspace))
        return {v: topic.rsplit(":", 1)[-1] for v, topic in rows}

    def version_of(self, workspace: str, event_type: str) -> int:
        return next(v for v, name in self.versions(workspace).items() if name == event_type)

    def state(self, workspace: str, version: int) -> bytes:
        (row,) = self.sql("SELECT state FROM {t} WHERE originator_id = :o AND originator_version = :v",
                          o=self.key(workspace), v=version)
        return bytes(row[0])

    def set_state(self, workspace: str, version: int, state: bytes) -> None:
        self.sql("UPDATE {t} SET state = :s WHERE originator_id = :o AND originator_version = :v",
                 s=state, o=self.key(workspace), v=version)

    def edit(self, workspace: str, version: int, change: Any) -> None:
        doc = json.loads(self.state(workspace, version))
        change(doc)
        self.set_state(workspace, version, json.dumps(doc, separators=(",", ":")).encode())

    def delete(self, workspace: str, version: int) -> None:
        self.sql("DELETE FROM {t} WHERE originator_id = :o AND originator_version = :v",
                 o=self.key(workspace), v=version)

    def insert(self, workspace: str, version: int, topic: str, state: bytes) -> None:
        self.sql("INSERT INTO {t} (originator_id, originator_version, topic, state) VALUES (:o, :v, :topic, :s)",
                 o=self.key(workspace), v=version, topic=topic, s=state)

    def swap(self, workspace: str, a: int, b: int) -> None:
        for old, new in ((a, -1), (b, a), (-1, b)):
            self.sql("UPDATE {t} SET originator_version = :new WHERE originator_id = :o AND originator_version = :old",
                     new=new, old=old, o=self.key(workspace))

    def topic(self, workspace: str, version: int) -> str:
        (row,) = self.sql("SELECT topic FROM {t} WHERE originator_id = :o AND originator_version = :v",
                          o=self.key(workspace), v=version)
        return str(row[0])


@pytest.fixture
def stored(db_url: str) -> Iterator[StoredEvents]:
    events = StoredEvents(db_url)
    yield events
    events.engine.dispose()


def paid(book: Any) -> Book:
    """acme pays 19.00 for Pro and reports members; bolt adds a card."""
    b: Book = book("forms")
    b.do("acme", "add-payment-method", payment_method=VISA)
    assert b.do("acme", "subscribe", plan="pro", interval="month").ok
    b.do("acme", "set-members", members=2)
    b.do("bolt", "add-payment-method", payment_method=VISA)
    return b


def audit_verify(db_url: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["--json", "audit", "verify", "--db", db_url])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def assert_named(db_url: str, workspace: str, version: int, problem: str) -> dict[str, Any]:
    code, out = audit_verify(db_url)
    assert code == 1, out
    assert (out["failed"], out["workspace"], out["version"], out["problem"]) == (
        "event_chain", workspace, version, problem), out
    return out


# ------------------------------------------------------------------ clean stores verify


def test_the_clean_demo_ledger_verifies(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(db_url, as_json=True) == 0
    capsys.readouterr()
    code, out = audit_verify(db_url)
    assert code == 0, out
    assert out["ok"] and out["events"] > 60 and out["rows"] > 60 and out["workspaces"] == 4
    assert all(check["ok"] for check in out["checks"].values())


# ------------------------------------------------------------------ tampering is named


def test_a_stored_payment_edited_from_19_to_1_90_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    """The issue's case: the amount of a PaymentSucceeded changed in the events table."""
    paid(book)
    version = stored.version_of("acme", "PaymentSucceeded")
    stored.edit("acme", version, lambda doc: doc["amount"].update(_data_="1.90"))
    out = assert_named(db_url, "acme", version, "changed")
    assert out["stream"] == "workspace" and out["position"] > 0


def test_replay_refuses_to_explain_show_or_reprice_from_altered_events(book: Any, db_url: str,
                                                                        stored: StoredEvents) -> None:
    """What support pastes into a reply must come from the events as recorded."""
    paid(book)
    version = stored.version_of("acme", "InvoiceIssued")
    stored.edit("acme", version, lambda doc: doc["subtotal"].update(_data_="1.90"))
    for args in (["replay", "explain", "in_acme_0001"], ["replay", "as-of", "acme", "--at", "2026-04-02T00:00:00Z"],
                 ["replay", "what-if", "acme", "--policy", "proration=second"]):
        result = CliRunner().invoke(app, ["--db", db_url, "--json", *args])
        assert result.exit_code == 1, result.output
        assert json.loads(result.stdout)["error"]["code"] == "event_chain_broken"
        assert f"acme fail their hash chain at version {version}" in json.loads(result.stdout)["error"]["message"]
    clean = CliRunner().invoke(app, ["--db", db_url, "replay", "explain", "in_bolt_0001"])
    assert "no invoice" in clean.output  # bolt's chain holds: only the altered workspace is refused


def test_audit_verify_reads_as_plain_text_naming_the_check_the_workspace_and_the_version(
        book: Any, db_url: str, stored: StoredEvents) -> None:
    """Text mode is for a person: a verdict, then one line a check; JSON only with --json."""
    paid(book)
    clean = CliRunner().invoke(app, ["audit", "verify", "--db", db_url])
    assert clean.exit_code == 0 and clean.stdout.splitlines()[0] == "audit verify: ok", clean.output
    assert "audit_vs_events  ok" in clean.stdout and "{" not in clean.stdout
    version = stored.version_of("acme", "PaymentSucceeded")
    stored.edit("acme", version, lambda doc: doc["amount"].update(_data_="1.90"))
    broken = CliRunner().invoke(app, ["audit", "verify", "--db", db_url])
    assert broken.exit_code == 1 and broken.stdout.splitlines()[0] == "audit verify: FAILED", broken.output
    chain_line = next(line for line in broken.stdout.splitlines() if "event_chain" in line)
    assert f"FAILED changed at workspace acme, version {version}" in chain_line, chain_line
    assert "snapshots        ok" in broken.stdout


def test_a_changed_timestamp_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    paid(book)
    version = stored.version_of("acme", "MembersChanged")
    stored.edit("acme", version, lambda doc: doc["timestamp"].update(_data_="2026-03-01T00:00:00+00:00"))
    assert_named(db_url, "acme", version, "changed")


def test_an_event_deleted_in_the_middle_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    paid(book)
    version = stored.version_of("acme", "PaymentSucceeded")
    assert version < max(stored.versions("acme"))
    stored.delete("acme", version)
    assert_named(db_url, "acme", version, "missing")


@pytest.mark.parametrize("command", [["show", "acme"], ["invoices", "acme"], ["payments", "pending"],
                                     ["replay", "verify"]])
def test_an_event_deleted_by_hand_is_refused_by_every_read_naming_the_workspace(
        book: Any, db_url: str, stored: StoredEvents, command: list[str]) -> None:
    """Folding a stream with a gap raised the library's bare OriginatorVersionError: `internal_error`,
    naming neither the workspace nor what happened."""
    paid(book)
    version = stored.version_of("acme", "PaymentSucceeded")
    stored.delete("acme", version)
    result = CliRunner(env={"SUBLEDGER_TEST_CLOCK": "2026-04-02T00:00:00Z"}).invoke(app, ["--db", db_url, *command])
    assert result.exit_code == 1, result.output
    assert (f"the stored events of acme go from version {version - 1} to {version + 1}: an event was deleted or "
            "moved by hand. Run `subledger audit verify` [event_chain_broken]") in result.output


def test_the_last_event_deleted_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    """The stream's head is its last link: an event deleted from the end leaves it behind."""
    paid(book)
    last = max(stored.versions("acme"))
    stored.delete("acme", last)
    assert_named(db_url, "acme", last, "missing")


def test_a_forged_event_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    """A second payment, copied from the real one, appended as the next version."""
    paid(book)
    version = stored.version_of("acme", "PaymentSucceeded")
    forged = max(stored.versions("acme")) + 1
    stored.insert("acme", forged, stored.topic("acme", version), stored.state("acme", version))
    assert_named(db_url, "acme", forged, "inserted")


def test_two_events_swapped_are_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    paid(book)
    first = stored.version_of("acme", "PaymentSucceeded")
    stored.swap("acme", first, first + 1)
    out = assert_named(db_url, "acme", first, "out_of_order")
    assert f"version {first + 1}" in out["detail"]


def test_the_first_break_in_log_order_is_reported(book: Any, db_url: str, stored: StoredEvents) -> None:
    paid(book)
    stored.delete("bolt", max(stored.versions("bolt")))
    stored.delete("acme", 2)
    out = assert_named(db_url, "acme", 2, "missing")
    assert out["broken_streams"] == 2


def test_a_deleted_audit_row_is_caught_though_the_audit_chain_still_holds(book: Any, db_url: str,
                                                                          stored: StoredEvents) -> None:
    """The audit trail's own chain cannot see its last row go; comparing it with the events does."""
    paid(book)
    assert audit_verify(db_url)[0] == 0
    last = max(stored.versions("acme"))
    table = AuditTrail.table_name("audit_trail", f"v{AuditTrail.version}")
    stored.sql(f"DELETE FROM {table} WHERE workspace = 'acme' AND version = :v", v=last)
    code, out = audit_verify(db_url)
    assert code == 1 and out["checks"]["audit_trail"]["ok"]
    assert (out["failed"], out["workspace"], out["version"], out["problem"]) == ("audit_vs_events", "acme", last,
                                                                                 "no_row")


def test_an_audit_row_rewritten_with_another_actor_and_its_hash_recomputed_is_caught(
        book: Any, db_url: str, stored: StoredEvents) -> None:
    """The audit trail's chain is plain SHA-256 anyone with the table can recompute; the event
    still says who did it."""
    from projections import audit_trail

    paid(book)
    assert audit_verify(db_url)[0] == 0
    last = max(stored.versions("acme"))
    table = AuditTrail.table_name("audit_trail", f"v{AuditTrail.version}")
    with stored.engine.begin() as conn:
        stable = AuditTrail.stable()["audit_trail"]  # typed columns: instants and amounts as hashed
        row = dict(conn.execute(select(stable).where(stable.c.workspace == "acme", stable.c.version == last))
                   .mappings().one())
        row.update(actor_id="mallory", channel="console")
        forged = hashlib.sha256((row["prev_hash"] + audit_trail.canonical(row)).encode("utf-8")).hexdigest()
        conn.execute(text(f"UPDATE {table} SET actor_id = 'mallory', channel = 'console', hash = :h "
                          "WHERE workspace = 'acme' AND version = :v"), {"h": forged, "v": last})
    code, out = audit_verify(db_url)
    assert code == 1 and out["checks"]["audit_trail"]["ok"], out  # its own chain holds
    assert (out["failed"], out["workspace"], out["version"], out["problem"]) == ("audit_vs_events", "acme", last,
                                                                                 "differs")
    assert "actor_id: audit 'mallory'" in out["detail"] and "channel: audit 'console'" in out["detail"]


def team_workspace(book: Any, members_changes: int) -> Book:
    """Workspace w on team with 3 seats and a good card, then its members changed that many times
    (a snapshot every 50 events)."""
    b: Book = book("workspace")
    b.do("w", "add-payment-method", payment_method=VISA)
    b.do("w", "subscribe", plan="team", interval="month", seats=3)
    for n in range(members_changes):
        b.do("w", "set-members", members=n % 3)
    return b


def edit_snapshots(stored: StoredEvents, ws: str, change: Any) -> list[tuple[int, str, bytes]]:
    """`change` applied to the state of every stored snapshot of `ws`, in place; each one's
    version, topic and new bytes."""
    snapshots = stored.table.replace("events", "snapshots")
    edited = []
    for version, topic, state in stored.sql(f"SELECT originator_version, topic, state FROM {snapshots} "
                                            "WHERE originator_id = :o", o=stored.key(ws)):
        doc = json.loads(bytes(state))
        change(doc["state"])
        new = json.dumps(doc).encode()
        stored.sql(f"UPDATE {snapshots} SET state = :s WHERE originator_id = :o AND originator_version = :v",
                   s=new, o=stored.key(ws), v=version)
        edited.append((version, topic, new))
    return edited


def test_an_edited_snapshot_is_named(book: Any, db_url: str, stored: StoredEvents) -> None:
    """A snapshot is loaded instead of the events before it, so it must equal their replay."""
    team_workspace(book, 50)
    ((version, _, _),) = edit_snapshots(stored, "w", lambda state: state.update(seats=30))
    code, out = audit_verify(db_url)
    assert code == 1 and out["checks"]["event_chain"]["ok"]
    assert (out["failed"], out["workspace"], out["version"], out["problem"]) == ("snapshots", "w", version,
                                                                                 "snapshot_differs")


def test_an_unreadable_snapshot_is_named_with_its_version(book: Any, db_url: str, stored: StoredEvents) -> None:
    team_workspace(book, 50)
    snapshots = stored.table.replace("events", "snapshots")
    ((version,),) = stored.sql(f"SELECT originator_version FROM {snapshots} WHERE originator_id = :o", o=stored.key("w"))
    stored.sql(f"UPDATE {snapshots} SET state = :s WHERE originator_id = :o", s=b"\x00garbage", o=stored.key("w"))
    code, out = audit_verify(db_url)
    assert code == 1 and (out["failed"], out["workspace"], out["version"], out["problem"]) == (
        "snapshots", "w", version, "unreadable")
    assert f"the snapshot at version {version} cannot be read" in out["detail"]


def test_a_snapshot_that_decodes_but_cannot_be_applied_is_named_with_its_version(book: Any, db_url: str,
                                                                                 stored: StoredEvents) -> None:
    team_workspace(book, 50)
    ((version, _, _),) = edit_snapshots(stored, "w", lambda state: state.clear())
    code, out = audit_verify(db_url)
    assert code == 1 and (out["failed"], out["workspace"], out["version"], out["problem"]) == (
        "snapshots", "w", version, "unreadable")
    assert out["detail"].startswith(f"the snapshot at version {version} cannot be read or applied")


def test_a_snapshot_moved_past_the_last_event_is_named_and_not_loaded(book: Any, db_url: str,
                                                                     stored: StoredEvents) -> None:
    b = team_workspace(book, 50)
    head = b.sub("w").version
    b.close()
    snapshots = stored.table.replace("events", "snapshots")
    stored.sql(f"UPDATE {snapshots} SET originator_version = 99 WHERE originator_id = :o", o=stored.key("w"))
    code, out = audit_verify(db_url)
    assert code == 1 and (out["failed"], out["workspace"], out["version"], out["problem"]) == (
        "snapshots", "w", 99, "snapshot_without_event")
    again = Book(db_url, "workspace", "2026-04-02T00:00:00")
    try:
        assert again.do("w", "set-members", members=2).ok
        assert again.sub("w").version == head + 1  # decided on the events, not on a version 99
    finally:
        again.close()


def forget_invoices_in_snapshots(book: Any, stored: StoredEvents, *, digests_too: bool) -> None:
    """Workspaces w and z on team; w's snapshots edited to forget its invoices (and, with
    `digests_too`, their recorded digests rewritten to match, as a thorough forger would)."""
    b: Book = book("workspace")
    for ws in ("w", "z"):
        b.do(ws, "add-payment-method", payment_method=VISA)
        b.do(ws, "subscribe", plan="team", interval="month", seats=5)
    for n in range(60):
        b.do("w", "set-members", members=n % 3)
    b.close()
    for version, topic, edited in edit_snapshots(stored, "w", lambda state: state.update(invoice_count=0)):
        if digests_too:
            stored.sql(f"UPDATE {stored.table.replace('events', 'snapshots')}_digests SET digest = :d "
                       "WHERE originator_id = :o AND originator_version = :v",
                       d=digest(topic, edited), o=stored.key("w"), v=version)


def test_an_edited_snapshot_is_not_loaded_and_the_workspace_is_decided_on_its_events(
        book: Any, db_url: str, stored: StoredEvents) -> None:
    """The snapshot no longer matches the digest recorded when it was taken: the load replays the
    events, so the seat change bills the next invoice, not in_w_0001 again."""
    forget_invoices_in_snapshots(book, stored, digests_too=False)
    again = Book(db_url, "workspace", "2026-04-02T00:00:00")
    try:
        result = again.do("w", "set-seats", seats=10)
        assert result.ok, result.error
        issued = [e.invoice_id for e in again.ledger.workspace_events("w") if type(e).__name__ == "InvoiceIssued"]
        assert len(issued) == len(set(issued)) == 2 and issued[-1].endswith("_0002"), issued
        assert len(again.payments.charges("w")) == 2 and not again.sub("w").pending_charges
    finally:
        again.close()
    code, out = audit_verify(db_url)
    assert code == 1 and out["failed"] == "snapshots"


def test_a_snapshot_forged_with_its_digest_still_cannot_collect_a_payment_again(book: Any, db_url: str,
                                                                                stored: StoredEvents) -> None:
    """The forged state issues in_w_0001 again, for the same 40.00, under the same charge key: the
    gateway refuses a key asked for by another command, so no second payment is recorded for
    money that never moved; the charge stays pending and `audit verify` names the snapshot."""
    forget_invoices_in_snapshots(book, stored, digests_too=True)
    again = Book(db_url, "workspace", "2026-04-02T00:00:00")
    try:
        assert again.do("w", "set-seats", seats=10).error.code == "payment_pending"
        paid_for = [e for e in again.ledger.workspace_events("w")
                    if type(e).__name__ == "PaymentSucceeded" and e.invoice_id.endswith("_0001")]
        assert len(paid_for) == 1
        assert len(again.payments.charges("w")) == 1
        again.at("2026-05-02T00:00:00")  # the scheduler goes on for every other workspace
        assert "PeriodRenewed" in [type(e).__name__ for e in again.ledger.workspace_events("z")]
        assert again.sub("w").pending_charges, "left pending for a person to look at"
    finally:
        again.close()
    code, out = audit_verify(db_url)
    assert code == 1 and out["failed"] == "snapshots"


# ------------------------------------------------------------------ rebuild


def test_rebuild_refuses_a_broken_chain_and_force_rebuilds_from_it(book: Any, db_url: str,
                                                                  stored: StoredEvents) -> None:
    paid(book)
    assert audit_verify(db_url)[0] == 0  # the read models are current and agree
    version = stored.version_of("acme", "PaymentSucceeded")
    stored.edit("acme", version, lambda doc: doc["amount"].update(_data_="1.90"))
    runner = CliRunner()
    refused = runner.invoke(app, ["project", "rebuild", "--db", db_url])
    assert refused.exit_code == 1
    assert "event_chain_broken" in refused.output and f"workspace acme version {version}" in refused.output
    with stored.engine.connect() as conn:
        assert trial_balance(conn).get("receivable", 0) == 0  # the read models still hold what was recorded
    forced = runner.invoke(app, ["project", "rebuild", "--force", "--db", db_url])
    assert forced.exit_code == 0, forced.output
    with stored.engine.connect() as conn:
        assert trial_balance(conn)["receivable"] == Decimal("17.10")  # rebuilt from the altered payment
    assert audit_verify(db_url)[1]["failed"] == "event_chain"  # and the chain still says so


# ------------------------------------------------------------------ first upgrade


def unchain(stored: StoredEvents, drop: bool, as_before_the_chain: bool = True) -> None:
    """Delete the chain, its record and the record of a set-up by this version (adapters/schema.py),
    so the next process sets the store up. `as_before_the_chain`: also the ledger log, which only
    chaining versions write, so the store looks as one written before the chain existed."""
    for table in (f"{stored.table}_chain", f"{stored.table}_chain_meta"):
        stored.sql(f"DROP TABLE {table}" if drop else f"DELETE FROM {table}")
    stored.sql("DELETE FROM subledger_meta")
    if as_before_the_chain:
        stored.sql("DELETE FROM {t} WHERE originator_id = :o", o=stored.key("__ledger__"))


def test_an_existing_store_is_linked_once_on_first_upgrade(book: Any, db_url: str, stored: StoredEvents) -> None:
    b = paid(book)
    b.close()
    unchain(stored, drop=True)
    events = len(stored.sql("SELECT 1 FROM {t}"))
    upgraded = Book(db_url, "forms", "2026-04-20T00:00:00")
    upgraded.do("acme", "set-members", members=3)  # new events chain onto the upgraded links
    code, out = audit_verify(db_url)
    assert code == 0, out
    assert out["checks"]["event_chain"]["chained_since"]["events_linked_as_found"] == events
    assert out["events"] == events + 2  # set-members, and the clock's record a store from before the chain lacks
    upgraded.close()
    stored.delete("acme", 2)
    assert_named(db_url, "acme", 2, "missing")


def test_an_edited_link_digest_is_named_as_the_chain_edited_not_the_event(book: Any, db_url: str,
                                                                         stored: StoredEvents) -> None:
    paid(book)
    stored.sql("UPDATE {t}_chain SET digest = :d WHERE originator_id = :o AND originator_version = 2",
               d="0" * 64, o=stored.key("acme"))
    assert_named(db_url, "acme", 2, "link_altered")


@pytest.mark.parametrize("drop", [False, True], ids=["emptied", "dropped"])
def test_a_chain_deleted_from_a_store_a_chaining_version_wrote_is_refused_not_relinked(
        book: Any, db_url: str, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch, drop: bool) -> None:
    """Deleting the links and their record must not make the next process link an edited event
    as found: the ledger log says a chaining version wrote the store."""
    b = paid(book)
    b.close()
    version = stored.version_of("acme", "PaymentSucceeded")
    stored.edit("acme", version, lambda doc: doc["amount"].update(_data_="1.00"))
    unchain(stored, drop=drop, as_before_the_chain=False)
    refused = CliRunner().invoke(app, ["--db", db_url, "show", "acme"])
    assert refused.exit_code == 1 and "[event_chain_broken]" in refused.stderr, refused.output
    monkeypatch.setenv("SUBLEDGER_RELINK_AS_FOUND", "yes")
    code, out = audit_verify(db_url)
    assert code == 1 and (out["failed"], out["problem"]) == ("event_chain", "relinked_as_found"), out
    assert out["checks"]["event_chain"]["chained_since"]["relinked_missing_chain"] is True
    monkeypatch.delenv("SUBLEDGER_RELINK_AS_FOUND")
    assert CliRunner().invoke(app, ["--db", db_url, "show", "acme"]).exit_code == 0, "relinked: it opens again"


UPGRADE = """
import sys
from adapters.app import build_ledger
build_ledger(sys.argv[1]).close()
"""


def test_processes_starting_together_link_an_existing_store_once(book: Any, db_url: str,
                                                                 stored: StoredEvents) -> None:
    b = paid(book)
    b.close()
    unchain(stored, drop=False)
    events = len(stored.sql("SELECT 1 FROM {t}"))
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADE, db_url], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert len(stored.sql("SELECT 1 FROM {t}_chain")) == events
    code, out = audit_verify(db_url)
    assert code == 0, out
    assert out["checks"]["event_chain"]["chained_since"]["events_linked_as_found"] == events


# ------------------------------------------------------------------ encryption


def test_an_encrypted_ledger_round_trips_and_a_flipped_byte_is_caught(
        db_url: str, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    key = CliRunner().invoke(app, ["new-cipher-key"]).stdout.strip()
    monkeypatch.setenv("SUBLEDGER_CIPHER_KEY", key)
    b = paid(lambda catalog: Book(db_url, catalog, "2026-04-01T00:00:00"))
    b.close()
    version = stored.version_of("acme", "PaymentSucceeded")
    ciphertext = stored.state("acme", version)
    assert b"19.00" not in ciphertext and b"pm_card_visa" not in ciphertext
    again = Book(db_url, "forms", "2026-04-02T00:00:00")
    assert again.sub("acme").plan == "pro"
    assert audit_verify(db_url)[0] == 0
    flipped = bytearray(ciphertext)
    flipped[-1] ^= 0x01
    stored.set_state("acme", version, bytes(flipped))
    with pytest.raises(Exception, match="cipher tag"):
        again.ledger.workspace_events("acme")
    assert_named(db_url, "acme", version, "changed")
    again.close()


@pytest.mark.parametrize("second_key", ["another", "none"])
def test_an_encrypted_ledger_read_with_another_key_or_none_names_the_variable(
        db_url: str, monkeypatch: pytest.MonkeyPatch, second_key: str) -> None:
    """Not an internal error: exit 3 (`unavailable`), saying which variable to set."""
    new_key = lambda: CliRunner().invoke(app, ["new-cipher-key"]).stdout.strip()  # noqa: E731
    monkeypatch.setenv("SUBLEDGER_CIPHER_KEY", new_key())
    paid(lambda catalog: Book(db_url, catalog, "2026-04-01T00:00:00")).close()
    if second_key == "none":
        monkeypatch.delenv("SUBLEDGER_CIPHER_KEY")
    else:
        monkeypatch.setenv("SUBLEDGER_CIPHER_KEY", new_key())
    monkeypatch.setenv("SUBLEDGER_TEST_CLOCK", "2026-04-02T00:00:00Z")
    result = CliRunner().invoke(app, ["--db", db_url, "set-members", "acme", "--members", "1"])
    assert result.exit_code == 3, result.output
    assert "$SUBLEDGER_CIPHER_KEY to the key this ledger was written with" in result.output
    assert "[unavailable]" in result.output and "MapperDeserialisationError" not in result.output
    code, verified = audit_verify(db_url)  # it printed the library's error and a codec's complaint
    assert code == 1 and "MapperDeserialisationError" not in json.dumps(verified)
    assert "$SUBLEDGER_CIPHER_KEY" in verified["checks"]["audit_vs_events"]["detail"]


def test_a_cipher_key_that_is_not_an_aes_key_is_refused() -> None:
    assert cipher_env(None) == {}
    with pytest.raises(ValueError, match="SUBLEDGER_CIPHER_KEY"):
        cipher_env("not a key")


def test_two_processes_writing_one_workspace_in_turn_keep_its_chain_whole(book: Any, db_url: str) -> None:
    """A writer chains its next event from the last link it wrote itself only when nobody wrote
    after it; otherwise it reads the link before from the store."""
    first, second = book("workspace"), book("workspace")
    assert first.do("ws", "add-payment-method", payment_method=VISA).ok
    for members in range(1, 7):
        writer = first if members % 3 else second
        assert writer.do("ws", "set-members", members=members).ok
    assert first.do("other", "set-members", members=1).ok and second.do("other", "set-members", members=2).ok
    report = first.ledger.recorder.verify_chain()
    assert report.ok, report.breaks


def test_the_read_models_never_fold_an_edited_snapshot_into_what_they_show(book: Any, db_url: str,
                                                                           stored: StoredEvents) -> None:
    """A read-model runner of its own process (`subledger project`) loads a workspace it has not
    seen from the store, through the same digest check as commands: the seats stay 3."""
    b = team_workspace(book, 100)
    assert CliRunner().invoke(app, ["project", "--db", db_url]).exit_code == 0
    edit_snapshots(stored, "w", lambda state: state.update(seats=30))
    b.do("w", "set-members", members=1)  # the read models are behind it
    b.close()
    assert CliRunner().invoke(app, ["project", "--db", db_url]).exit_code == 0
    shown = CliRunner().invoke(app, ["--db", db_url, "--json", "show", "w"])
    assert shown.exit_code == 0, shown.output
    assert (json.loads(shown.stdout)["seats"], json.loads(shown.stdout)["members"]) == (3, 1), shown.stdout
