"""Refusals read as English, digits are ASCII, and bad input exits 2 (README: exit codes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from domain.catalog import CatalogError, parse_catalog
from domain.commands import CONTRACTS, parse_command
from domain.errors import LedgerError
from tests.conftest import SALES
from tests.support import VISA, refused

NOT_ENGLISH = re.compile(r"None|\ba [aeio]|\bthe (\d+) seats of \1 seats|\b1 seats\b")


def english(message: str) -> str:
    assert not NOT_ENGLISH.search(message), message
    return message


def test_R5_seat_refusals_name_the_plan_not_the_seat_count_twice(book: Any) -> None:
    b = book("workspace")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="team", seats=5).ok
    assert b.do("ws", "set-members", members=4).ok
    result = refused(b, "ws", "seat_limit_exceeded", "set-seats", seats=3)
    assert english(result.error.message) == "4 active members exceed the 3 seats of Team: remove members first"
    forms = book("forms")
    assert forms.do("f", "add-payment-method", payment_method=VISA).ok
    assert forms.do("f", "subscribe", plan="pro").ok
    assert forms.do("f", "set-members", members=2).ok
    result = refused(forms, "f", "seat_limit_exceeded", "change-plan", plan="free")
    assert english(result.error.message) == "2 active members exceed the 1 seat of Free: remove members first"


def test_R7_a_missing_payment_method_is_asked_for_what_is_being_done(book: Any) -> None:
    b = book("forms")
    result = refused(b, "ws", "payment_method_required", "subscribe", plan="pro")
    assert english(result.error.message) == "add a payment method before subscribing"
    assert b.do("ws", "subscribe", plan="free").ok
    result = refused(b, "ws", "payment_method_required", "change-plan", plan="team")
    assert english(result.error.message) == "add a payment method before upgrading"


@pytest.mark.parametrize("contract", CONTRACTS)
def test_R9_contact_sales_names_the_contract_with_the_right_article(book: Any, contract: str) -> None:
    b = book("forms")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="pro").ok
    assert b.do("ws", "set-contract", actor=SALES, contract=contract).ok
    message = english(refused(b, "ws", "contact_sales", "change-plan", plan="team").error.message)
    expected = "an" if contract in ("enterprise", "institution", "education") else "a"
    assert message.startswith(f"this workspace is on {expected} {contract} contract: contact sales")


def test_clearing_what_is_not_there_says_so_without_none(book: Any) -> None:
    b = book("workspace")
    assert b.do("ws", "add-payment-method", payment_method=VISA).ok
    assert b.do("ws", "subscribe", plan="team", seats=2).ok
    assert english(refused(b, "ws", "invalid_request", "set-contract", actor=SALES, contract=None).error.message) == \
        "the workspace has no contract to end"
    assert english(refused(b, "ws", "invalid_request", "set-storage-addon", addon=None).error.message) == \
        "the workspace has no storage add-on to remove"
    assert english(refused(b, "ws", "already_subscribed", "subscribe", plan="team").error.message) == \
        "already subscribed to Team: use change-plan"
    assert b.do("ws", "report-storage", gb="150").ok
    message = refused(b, "ws", "storage_limit_exceeded", "change-plan", plan="free").error.message
    assert english(message).startswith("150 GB used exceeds the 5 GB of Free")


@pytest.mark.parametrize("text", ["３", "1２", "٣", "３.5"])
def test_a_full_width_or_other_script_digit_is_not_a_number(text: str) -> None:
    with pytest.raises(LedgerError) as caught:
        parse_command("report-storage", {"gb": text})
    assert caught.value.code == "invalid_request" and "digits 0-9" in caught.value.message
    catalog = ('id = "x"\nversion = "1"\nname = "X"\ncurrency = "USD"\n[[plans]]\nid = "a"\nname = "A"\n'
               f'rank = 0\nkind = "paid"\nstorage_gb = 1\nprices = {{ month = "{text}" }}\n')
    with pytest.raises(CatalogError, match="digits 0-9"):
        parse_catalog(catalog)


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.db = f"sqlite:///{tmp_path}/cli.db"

    def __call__(self, *args: str) -> Any:
        result = CliRunner().invoke(app, ["--db", self.db, "--json", *args])
        assert "Traceback" not in result.output, result.output
        return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    assert c("add-payment-method", "ws1", "--payment-method", VISA)[0] == 0
    assert c("subscribe", "ws1", "--plan", "pro")[0] == 0
    return c


@pytest.mark.parametrize("args", [
    ["set-members", "ws1", "--members", "３"],
    ["set-members", "ws1", "--members", "٣"],
    ["report-storage", "ws1", "--gb", "１２"],
    ["preview", "ws1", "--do", "set-members", "--members", "３"],
])
def test_full_width_digits_on_the_command_line_exit_2_and_record_nothing(cli: Cli, args: list[str]) -> None:
    version = cli("show", "ws1")[1]["version"]
    code, out = cli(*args)
    assert (code, out["error"]["code"]) == (2, "invalid_request")
    assert cli("show", "ws1")[1]["version"] == version


@pytest.mark.parametrize("args", [
    ["set-storage-addon", "ws1", "--addon", "none"],
    ["set-contract", "ws1", "--contract", "none", "--role", "sales"],
    ["change-plan", "ws1", "--plan", "team", "--interval", "year", "--tier", "10000"],
])
def test_every_invalid_request_a_domain_command_meets_exits_2(cli: Cli, args: list[str]) -> None:
    """Bad input exits 2 whether the command model or the ledger's decision found it; a rule's
    refusal (a real precondition) stays exit 1."""
    version = cli("show", "ws1")[1]["version"]
    code, out = cli(*args)
    assert (code, out["ok"], out["error"]["code"]) == (2, False, "invalid_request"), out
    english(out["error"]["message"])
    assert cli("show", "ws1")[1]["version"] == version
    code, out = cli("change-plan", "ws1", "--plan", "pro")
    assert (code, out["error"]["code"]) == (1, "already_on_plan")


@pytest.mark.parametrize(("args", "code"), [
    (["pay-invoice", "ws1"], "no_open_invoice"),
    (["preview", "ws1", "--do", "pay-invoice"], "no_open_invoice"),
    (["subscribe", "ws1", "--plan", "team"], "already_subscribed"),
    (["set-seats", "nobody", "--seats", "5"], "not_subscribed"),
    (["payments", "confirm", "ws1"], "no_pending_payment"),
    (["payments", "abandon", "ws1"], "no_pending_payment"),
    (["payments", "abandon", "nobody"], "not_found"),
    (["payments", "pending", "nobody"], "not_found"),
])
def test_a_state_that_refuses_the_command_exits_1_with_its_own_code(cli: Cli, args: list[str], code: str) -> None:
    """Well-formed input the workspace's state refuses is a refusal (exit 1), not bad input."""
    version = cli("show", "ws1")[1]["version"]
    exit_code, out = cli(*args)
    assert (exit_code, out["ok"], out["error"]["code"]) == (1, False, code), out
    english(out["error"]["message"])
    assert cli("show", "ws1")[1]["version"] == version


@pytest.mark.parametrize("reason", ["asked\n#30  2026-11-24 15:40:00 UTC  PaymentRefunded  by finance", "tab\there",
                                    "bidi \u202e override", "x" * 501])
def test_a_reason_is_one_printable_line_or_nothing_is_recorded(cli: Cli, reason: str) -> None:
    """A line break in a reason could pass for another entry of the text audit trail."""
    version = cli("show", "ws1")[1]["version"]
    code, out = cli("set-members", "ws1", "--members", "3", "--reason", reason)
    assert (code, out["error"]["code"]) == (2, "invalid_request")
    assert cli("show", "ws1")[1]["version"] == version


@pytest.mark.parametrize(("written", "recorded"), [("1E+2", None), ("-0", None), ("5_0", None), ("1.5e0", None),
                                                   ("100.0", "100"), ("2.50", "2.5"), ("0", "0")])
def test_storage_is_recorded_as_plain_digits_in_one_form(cli: Cli, written: str, recorded: str | None) -> None:
    """A quote made with 100 commits a report of 100.0: one quantity, one way to write it."""
    code, out = cli("report-storage", "ws1", "--gb", written)
    if recorded is None:
        assert (code, out["error"]["code"]) == (2, "invalid_request")
    else:
        assert code == 0 and cli("show", "ws1")[1]["storage_used_gb"] == recorded


@pytest.mark.parametrize("reason", ["one\u2028two", "lone \ud800 surrogate", "para\u2029graph"])
def test_a_reason_with_a_unicode_line_separator_or_a_lone_surrogate_is_refused(reason: str) -> None:
    from domain.commands import check_reason

    with pytest.raises(LedgerError) as refused:
        check_reason(reason)
    assert refused.value.code == "invalid_request"


@pytest.mark.parametrize(("sent", "kept"), [(12.5, "12.5"), (100.0, "100"), (0.1, "0.1"), (0.00001, "0.00001"), (3, "3"),
                                             ("2.50", "2.5")])
def test_storage_sent_as_a_json_number_is_the_number_written(sent: object, kept: str) -> None:
    """HTTP clients send 12.5 or 100.0: the decimal they wrote, never the binary fraction."""
    assert str(parse_command("report-storage", {"gb": sent}).gb) == kept


@pytest.mark.parametrize("sent", [1e20, float("nan"), float("inf"), -1.0, True])
def test_storage_sent_as_a_number_it_cannot_be_is_refused(sent: object) -> None:
    with pytest.raises(LedgerError) as refused:
        parse_command("report-storage", {"gb": sent})
    assert refused.value.code == "invalid_request"


@pytest.mark.parametrize(("sent", "shown"), [(1e300, "'1e+300'"), ("9" * 30, "'99999999999999999999'... (30 characters)"),
                                             ("1234567890", "'1234567890'"), (0.0000001, "'0.0000001'")])
def test_storage_too_big_is_refused_as_written_with_the_limits_it_breaks(sent: object, shown: str) -> None:
    """1e300 was echoed as the first 20 of its 301 digits, 30 digits as 20, and 0.0000001 as 1e-07:
    numbers the user never wrote."""
    with pytest.raises(LedgerError) as refused:
        parse_command("report-storage", {"gb": sent})
    assert f"{shown} is not a number of GB: up to 9 digits 0-9, with an optional fraction of up to 6" in \
        refused.value.message
