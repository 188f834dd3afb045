"""Refused input is told in plain words, the same way by every adapter (domain/plain_errors.py):
never pydantic's wording ("Value error, ...", a regex, "Extra inputs are not permitted"), never a
location such as `plans.2.prices.week.[key]`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from domain.catalog import CatalogError, load_catalog, parse_catalog
from domain.commands import parse_actor, parse_command
from domain.errors import LedgerError
from replay.what_if import with_policy
from tests.test_catalog_checks import catalog_text
from tests.test_http_commands import Api

LEAKS = ("Value error", "should match pattern", "Extra inputs", "after validation", "[key]", "(top)", "Field required",
         ": :", "..")


def plain(message: str) -> str:
    assert not [leak for leak in LEAKS if leak in message], message
    return message


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: t + '[[plans]]\nid = "a"\nname = "Again"\nrank = 1\nkind = "free"\nstorage_gb = 1\n',
     "  - ids used twice: a"),
    (lambda t: t.replace('id = "a"', 'id = "Plan A!"'),
     "  - plans[0].id: must be 1-40 lowercase letters, digits, '_' or '-', starting with a letter or digit"),
    (lambda t: t + "colour = 1\n", "  - 'colour' is not a field of plans[0]"),
    (lambda t: 'colour = 1\n' + t, "  - unknown field 'colour'"),
    (lambda t: t.replace("month =", "week ="), "  - plans[0].prices: the key 'week' must be 'month' or 'year'"),
    (lambda t: t.replace('name = "a"\n', ""), "  - plans[0].name is required"),
    (lambda t: t.replace('currency = "USD"\n', f'currency = "USD"\n[policy]\ndunning_retry_days = {[*range(1, 12)]}\n'),
     "  - policy.dunning_retry_days: at most 10 items (11 given)"),
    (lambda t: t.replace('currency = "USD"\n', 'currency = "USD"\n[policy]\ndunning_retry_days = [5, 3]\n'),
     "  - policy.dunning_retry_days: retry days must increase"),
    (lambda t: t.replace('version = "1"', 'version = ""'), "  - version: must not be empty"),
    (lambda t: "policy = 3\n" + t, "  - policy: must be a valid dictionary"),
])
def test_a_catalog_problem_is_one_plain_line_naming_where_it_is(tmp_path: Path, edit: Any, said: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(edit(catalog_text()))
    assert said in plain(str(caught.value)).splitlines()
    path = tmp_path / "catalog.toml"
    path.write_text(edit(catalog_text()))
    checked = CliRunner().invoke(app, ["catalog", "check", str(path)])
    assert checked.exit_code == 2 and said in checked.stderr and "[invalid_catalog]" in checked.stderr


@pytest.mark.parametrize(("name", "args", "said"), [
    ("subscribe", {"plan": "Pro!"},
     "subscribe: plan: must be 1-40 lowercase letters, digits, '_' or '-', starting with a letter or digit"),
    ("set-seats", {"seats": 3, "members": 3}, "set-seats: unknown field 'members'"),
    ("set-seats", {}, "set-seats: seats is required"),
    ("add-payment-method", {"payment_method": "4242"}, "add-payment-method: payment_method: must be a payment "
     "method id: pm_ and 1-64 letters, digits or '_' (pm_card_visa)"),
    ("subscribe", {"plan": "pro", "interval": "week"}, "subscribe: interval: must be 'month' or 'year'"),
])
def test_a_refused_command_says_the_rule_in_words(name: str, args: dict[str, Any], said: str) -> None:
    with pytest.raises(LedgerError) as caught:
        parse_command(name, args)
    assert (caught.value.code, plain(caught.value.message)) == ("invalid_request", said)


def test_an_actor_id_refused_on_the_command_line_says_what_an_id_is(tmp_path: Path) -> None:
    ran = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path}/l.db", "--json", "subscribe", "ws1", "--plan", "pro",
                                   "--actor", ""])
    error = json.loads(ran.stdout)["error"]
    assert (ran.exit_code, error["code"]) == (2, "invalid_request")
    assert plain(error["message"]) == ("actor.id: must be 1-64 letters, digits, '_', '.', ':' or '-', starting with "
                                       "a letter or digit")
    with pytest.raises(LedgerError, match=r"^actor\.role: must be 'owner'"):
        parse_actor({"id": "x", "role": "king"})


@pytest.mark.parametrize(("policy", "said"), [
    ({"trial_fallback": "nope"}, "--policy: policy.trial_fallback names unknown plan 'nope'"),
    ({"dunning_retry_days": list(range(1, 12))}, "--policy: policy.dunning_retry_days: at most 10 items (11 given)"),
    ({"carry_over_days": {"week": 3}}, "--policy: policy.carry_over_days: the key 'week' must be 'month' or 'year'"),
])
def test_a_what_if_policy_refused_says_why_in_words(policy: dict[str, Any], said: str) -> None:
    with pytest.raises(LedgerError) as caught:
        with_policy(load_catalog("forms"), policy)
    assert (caught.value.code, plain(caught.value.message)) == ("invalid_request", said)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = Api(f"sqlite:///{tmp_path}/ledger.db")
    yield made
    made.close()


@pytest.mark.parametrize(("body", "said"), [
    ({"plan": "Bad Plan!"},
     "body.plan: must be 1-40 lowercase letters, digits, '_' or '-', starting with a letter or digit"),
    ({"plan": "team", "colour": "red"}, "'colour' is not a field of body"),
    ({}, "body.plan is required"),
    ({"plan": "team", "quote": "zz"}, "body.quote: must be a quote id from a preview: qt_ and 24 hex digits"),
    ({"plan": "team", "keep_team": ""},
     "body.keep_team: must be 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"),
])
def test_a_refused_http_body_says_what_is_wrong_in_words(api: Api, body: dict[str, Any], said: str) -> None:
    r = api.do("change-plan", body)
    assert (r.status_code, r.json()["code"], plain(r.json()["detail"])) == (400, "invalid_request", said)
