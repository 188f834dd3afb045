"""Catalog loading and `subledger catalog check` refuse what cannot be billed as written."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.cli import app
from domain.catalog import BUILT_IN, Catalog, CatalogError, load_catalog, parse_catalog

HEAD = 'id = "x"\nversion = "1"\nname = "X"\ncurrency = "{currency}"\n'
PLAN = '[[plans]]\nid = "{id}"\nname = "{id}"\nrank = {rank}\nkind = "paid"\nstorage_gb = 1\nprices = {{ month = "{price}" }}\n'


def catalog_text(currency: str = "USD", plans: tuple[tuple[str, int, str], ...] = (("a", 0, "19.00"),),
                 extra: str = "") -> str:
    return HEAD.format(currency=currency) + "".join(PLAN.format(id=i, rank=r, price=p) for i, r, p in plans) + extra


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["catalog", "check", str(path)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(("currency", "price", "unit"), [
    ("USD", "19.999", "at most 2 decimal places"),
    ("JPY", "19.50", "whole units"),
    ("KWD", "1.2345", "at most 3 decimal places"),
])
def test_R13_a_price_finer_than_the_currency_minor_unit_is_refused(tmp_path: Path, currency: str, price: str,
                                                                   unit: str) -> None:
    """Every line is rounded to the minor unit (R13): a catalog price must already be payable."""
    text = catalog_text(currency, (("a", 0, price),))
    with pytest.raises(CatalogError, match=rf"{currency} prices take {unit}: plans\[0\]\.prices\.month = {price}"):
        parse_catalog(text)
    code, err = check(tmp_path, text)
    assert code == 2 and f"plans[0].prices.month = {price}" in err


def test_R13_tier_add_on_and_credit_pack_prices_are_checked_too(tmp_path: Path) -> None:
    extra = ('[[addons]]\nid = "more"\nname = "More"\nstorage_gb = 10\nprices = { month = "4.005" }\n'
             '[[credit_packs]]\nid = "ai"\nname = "AI"\ncredits = 100\nprice = "0.001"\n')
    with pytest.raises(CatalogError) as caught:
        parse_catalog(catalog_text(extra=extra))
    assert "addons[0].prices.month = 4.005" in str(caught.value)
    assert "credit_packs[0].price = 0.001" in str(caught.value)
    tiers = ('[[plans]]\nid = "ops"\nname = "Ops"\nrank = 1\nkind = "paid"\nstorage_gb = 1\n'
             '[[plans.tiers]]\noperations = 1000\ninterval = "month"\nprice = "1.0001"\n')
    with pytest.raises(CatalogError, match=r"plans\[1\]\.tiers\[0\]\.price = 1\.0001"):
        parse_catalog(catalog_text(extra=tiers))


def test_R13_whole_prices_written_with_zero_decimals_stay_valid() -> None:
    assert parse_catalog(catalog_text("JPY", (("a", 0, "1900.00"),))).plans[0].prices["month"] == 1900
    assert parse_catalog(catalog_text("USD", (("a", 0, "19.9"),))).plans[0].prices["month"] == parse_catalog(
        catalog_text("USD", (("a", 0, "19.90"),))).plans[0].prices["month"]


def test_R16_R17_two_plans_with_one_rank_are_refused(tmp_path: Path) -> None:
    """A plan's rank says which change is an upgrade and which a downgrade: it must be unique."""
    text = catalog_text(plans=(("a", 0, "10.00"), ("b", 1, "20.00"), ("c", 1, "30.00")))
    with pytest.raises(CatalogError, match=r"plan ranks must differ .*rank 1: b, c"):
        parse_catalog(text)
    code, err = check(tmp_path, text)
    assert code == 2 and "rank 1: b, c" in err


def test_R22_an_add_on_may_not_be_called_none_the_word_that_removes_it(tmp_path: Path) -> None:
    text = catalog_text(extra='[[addons]]\nid = "none"\nname = "Nothing"\nstorage_gb = 10\nprices = { month = "4.00" }\n')
    code, err = check(tmp_path, text)
    assert code == 2 and "addons[0].id = none: an add-on may not be called 'none'" in err
    assert Catalog.model_validate(tomllib.loads(text)).addons[0].id == "none"  # as a ledger reads one it published


def test_the_built_in_catalogs_pass_the_new_checks() -> None:
    for name in BUILT_IN:
        assert load_catalog(name).id == name


@pytest.mark.parametrize(("written", "said"), [
    ('"1e3"', 'plans[0].prices.month = "1e3": a price is plain digits 0-9 in quotes; write "1000.00"'),
    ('"1E+3"', 'plans[0].prices.month = "1E+3": a price is plain digits 0-9 in quotes; write "1000.00"'),
    ('"19.0e0"', 'plans[0].prices.month = "19.0e0": a price is plain digits 0-9 in quotes; write "19.00"'),
    ('"+12.00"', 'plans[0].prices.month = "+12.00": a price is plain digits 0-9 in quotes; write "12.00"'),
    ('" 12.00 "', 'plans[0].prices.month = " 12.00 ": a price is plain digits 0-9 in quotes; write "12.00"'),
    ('"1_2.00"', 'plans[0].prices.month = "1_2.00": a price is plain digits 0-9 in quotes; write "12.00"'),
    ("12", 'plans[0].prices.month = 12: a price is plain digits 0-9 in quotes; write "12.00"'),
    ('"12."', 'plans[0].prices.month = "12.": a price is plain digits 0-9 in quotes; write "12.00"'),
    ('".50"', 'plans[0].prices.month = ".50": a price is plain digits 0-9 in quotes; write "0.50"'),
    ("19.99", 'plans[0].prices.month = 19.99: a float cannot hold cents exactly; write "19.99"'),
    ('"-5.00"', 'plans[0].prices.month = "-5.00": a price is a positive amount in plain digits, e.g. "12.00"'),
    ('"twelve"', 'plans[0].prices.month = "twelve": a price is plain digits 0-9 in quotes, e.g. "12.00"'),
], ids=["exponent", "exponent-sign", "exponent-zero", "plus", "spaces", "underscore", "bare-integer", "no-decimals",
        "no-units", "float", "negative", "words"])
def test_a_price_not_written_in_plain_digits_is_refused_showing_how_to_write_it(tmp_path: Path, written: str,
                                                                                said: str) -> None:
    """An invoice must show the amount the file's reader saw: "1e3" billed 1000.00 as 1E+3, and
    "+12.00", " 12.00 ", "1_2.00" and 12 all billed 12.00."""
    text = catalog_text().replace('month = "19.00"', f"month = {written}")
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text)
    assert f"  - {said}" in str(caught.value).splitlines()
    code, err = check(tmp_path, text)
    assert code == 2 and said in err and "[invalid_catalog]" in err


def test_tier_add_on_and_credit_pack_prices_are_plain_digits_too() -> None:
    extra = ('[[addons]]\nid = "more"\nname = "More"\nstorage_gb = 10\nprices = { year = 40 }\n'
             '[[credit_packs]]\nid = "ai"\nname = "AI"\ncredits = 100\nprice = "+5"\n'
             '[[plans]]\nid = "ops"\nname = "Ops"\nrank = 1\nkind = "paid"\nstorage_gb = 1\n'
             '[[plans.tiers]]\noperations = 1000\ninterval = "month"\nprice = 100\n')
    with pytest.raises(CatalogError) as caught:
        parse_catalog(catalog_text(extra=extra))
    assert [line.split(":")[0] for line in str(caught.value).splitlines()[1:]] == [
        "  - plans[1].tiers[0].price = 100", "  - addons[0].prices.year = 40", '  - credit_packs[0].price = "+5"']


def test_bare_integers_that_are_not_prices_stay_accepted() -> None:
    """Seats, operations, credits and days are counts, written as TOML integers."""
    extra = ('[[plans]]\nid = "ops"\nname = "Ops"\nrank = 1\nkind = "paid"\nstorage_gb = 1\nteams = 2\n'
             '[[plans.tiers]]\noperations = 1000\ninterval = "month"\nprice = "100.00"\n')
    catalog = parse_catalog(catalog_text(extra=extra).replace('currency = "USD"\n', 'currency = "USD"\n[policy]\n'
                                                              'carry_over_days = { month = 20 }\n'))
    assert (catalog.plans[1].tiers[0].operations, catalog.policy.carry_over_days["month"]) == (1000, 20)


@pytest.mark.parametrize(("written", "field"), [
    ("max_seats = true", "max_seats"), ("trial_days = true", "trial_days"), ("rank = 0.0", "rank"),
])
def test_a_count_written_as_a_flag_or_a_fraction_is_refused(tmp_path: Path, written: str, field: str) -> None:
    """`max_seats = true` is not one seat: a typo never silently changes billing."""
    key = written.split(" = ")[0]
    text = catalog_text().replace("rank = 0\n", "") + f"{written}\n" + ("" if key == "rank" else "rank = 0\n")
    code, err = check(tmp_path, text)
    assert code == 2 and f"plans[0].{field}" in err


@pytest.mark.parametrize("flag", ['"false"', "0"])
def test_a_policy_flag_written_as_text_or_a_number_is_refused(tmp_path: Path, flag: str) -> None:
    code, err = check(tmp_path, catalog_text().replace('currency = "USD"\n', f'currency = "USD"\n[policy]\n'
                                                       f'upgrade_new_cycle = {flag}\n', 1))
    assert code == 2 and "upgrade_new_cycle" in err


@pytest.mark.parametrize("text", ['version = "2026-01-01\\n"', 'version = "v\\u202e1"', f'name = "{"x" * 201}"'])
def test_catalog_text_is_one_printable_line(tmp_path: Path, text: str) -> None:
    """A version or name is printed on every command's output and recorded on every event."""
    key = text.split(" = ")[0]
    body = "\n".join(line for line in catalog_text().splitlines() if not line.startswith(f"{key} =")) + "\n"
    code, err = check(tmp_path, f"{text}\n{body}")
    assert code == 2 and key in err


def test_a_catalog_file_larger_than_a_mebibyte_or_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    big = catalog_text() + "# " + "x" * (1 << 20) + "\n"
    code, err = check(tmp_path, big)
    assert code == 2 and "larger than 1024 KiB" in err
    code, err = check(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert code == 2 and "nested too deeply" in err


@pytest.mark.parametrize("header", ["[policy.{}]", "[[plans.{}]]", "[{}]"])
def test_a_table_header_nested_a_thousand_deep_is_refused_not_an_internal_error(tmp_path: Path, header: str) -> None:
    """TOML reads dotted table names without recursion; every check after it recurses."""
    code, err = check(tmp_path, catalog_text() + header.format(".".join(["a"] * 1000)) + "\n")
    assert code == 2 and "nested too deeply" in err and "invalid_catalog" in err


def test_a_catalog_saved_with_a_byte_order_mark_loads_as_the_same_catalog(tmp_path: Path) -> None:
    """Windows editors start a UTF-8 file with a byte order mark: it was refused as 'Invalid
    statement (line 1, col 1)'. It is not content: the catalog and its content hash are the same."""
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_text(catalog_text(), "utf-8")
    marked.write_text(catalog_text(), "utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_catalog(marked).content_hash == load_catalog(plain).content_hash
    assert check(tmp_path, "\ufeff" + catalog_text())[0] == 0


def test_a_catalog_as_deep_as_its_tiers_still_loads() -> None:
    tiers = ('[[plans]]\nid = "ops"\nname = "Ops"\nrank = 1\nkind = "paid"\nstorage_gb = 1\n'
             '[[plans.tiers]]\noperations = 1000\ninterval = "month"\nprice = "10.00"\n')
    assert parse_catalog(catalog_text(extra=tiers)).plans[1].tiers[0].operations == 1000


def test_a_negative_carry_over_is_refused_in_a_file(tmp_path: Path) -> None:
    text = catalog_text().replace('currency = "USD"\n', 'currency = "USD"\n[policy]\ncarry_over_days = { year = -5 }\n')
    code, err = check(tmp_path, text)
    assert code == 2 and "policy.carry_over_days.year = -5: at least 0, at most 3660" in err


TRIAL = '[[plans]]\nid = "trial"\nname = "Trial"\nrank = 9\nkind = "trial"\ntrial_days = 14\nstorage_gb = 1\n'
CONTRACT = '[[plans]]\nid = "ent"\nname = "Ent"\nrank = 8\nkind = "contract"\nstorage_gb = 1\n'


@pytest.mark.parametrize(("policy", "said"), [
    ("", "a trial and no free plan for it to fall back to"),
    ('[policy]\ntrial_fallback = "a"\n', "policy.trial_fallback = a: a paid plan"),
    ('[policy]\ntrial_fallback = "ent"\n', "policy.trial_fallback = ent: a contract plan"),
])
def test_R15_a_trial_must_fall_back_to_a_free_plan(tmp_path: Path, policy: str, said: str) -> None:
    """With none, the trial's end stopped the scheduler and the read models for every workspace
    (no plan to land on); a paid one billed nothing and fell due forever; a contract plan gave its
    features for free."""
    paid = PLAN.format(id="a", rank=0, price="19.00")
    code, err = check(tmp_path, HEAD.format(currency="USD") + policy + paid + TRIAL + CONTRACT)
    assert code == 2 and said in err and "R15" in err


FREE = '[[plans]]\nid = "hobby"\nname = "Hobby"\nrank = 7\nkind = "free"\nstorage_gb = 1\n'
PER_SEAT = '[[plans]]\nid = "team"\nname = "Team"\nrank = 6\nkind = "paid"\nper_seat = true\nstorage_gb = 1\n' \
    'prices = { month = "9.00" }\n'
BILLS_NOTHING = "bills nothing, so"


@pytest.mark.parametrize(("plans", "said"), [
    (FREE + 'prices = { month = "1.00" }\n', f"plans[1].prices: free plan 'hobby' {BILLS_NOTHING} its prices would "
     "never be charged"),
    (CONTRACT + 'prices = { month = "1.00" }\n', f"plans[1].prices: contract plan 'ent' {BILLS_NOTHING} its prices"),
    (FREE + '[[plans.tiers]]\noperations = 1000\ninterval = "month"\nprice = "1.00"\n',
     f"plans[1].tiers: free plan 'hobby' {BILLS_NOTHING} its tiers would never be charged"),
    (FREE + TRIAL + "per_seat = true\n", f"plans[2].per_seat: trial plan 'trial' {BILLS_NOTHING} it would never "
     "sell a seat"),
    (FREE + TRIAL + "ai_credits_per_seat = 50\n", f"plans[2].ai_credits_per_seat: trial plan 'trial' {BILLS_NOTHING} "
     "its AI credits would never be granted"),
    (FREE + "trial_days = 14\n", "plans[1].trial_days: free plan 'hobby' is not a trial"),
    (FREE + "max_seats = 5\n", "plans[1].max_seats: plan 'hobby' is not billed per seat"),
    (PER_SEAT + "seats = 5\n", "plans[1].seats: plan 'team' is billed per seat"),
    (FREE.replace('name = "Hobby"', 'name = ""'), "plans[1].name: plan 'hobby' has no name"),
    (FREE.replace('name = "Hobby"', 'name = "  "'), "plans[1].name: plan 'hobby' has no name"),
    (FREE + 'features = ["api", "sso", "api"]\n', "plans[1].features: plan 'hobby' lists api twice"),
    ('[[addons]]\nid = "more"\nname = ""\nstorage_gb = 10\nprices = { month = "4.00" }\n', "addons[0].name: blank"),
], ids=["free-prices", "contract-prices", "free-tiers", "trial-per-seat", "trial-ai-credits", "free-trial-days",
        "flat-max-seats", "per-seat-seats", "empty-name", "blank-name", "feature-twice", "add-on-name"])
def test_a_plan_field_its_kind_never_applies_is_refused_naming_the_plan(tmp_path: Path, plans: str, said: str) -> None:
    """`catalog check` showed a free plan's prices as if it billed them, and subscribe charged nothing:
    a field that cannot apply is a typo, and a typo must never silently change billing."""
    code, err = check(tmp_path, catalog_text() + plans)
    assert code == 2 and said in err and "[invalid_catalog]" in err


def test_the_same_plans_without_the_field_load() -> None:
    catalog = parse_catalog(catalog_text() + FREE + TRIAL + CONTRACT + PER_SEAT)
    assert [p.kind for p in catalog.plans] == ["paid", "free", "trial", "contract", "paid"]


BARE = """id = "bare"
version = "1"
name = "Bare prices"
currency = "USD"
[[plans]]
id = "free"
name = "Free"
rank = 0
kind = "free"
storage_gb = 1
[[plans]]
id = "pro"
name = "Pro"
rank = 1
kind = "paid"
storage_gb = 5
prices = { month = 19 }
"""


def test_a_catalog_a_ledger_recorded_before_the_stricter_rules_still_loads_from_its_file(tmp_path, db_url):
    """`month = 19` loaded a release ago and was recorded; now a price is quoted plain digits.
    Before, `--catalog bare.toml` was refused on that ledger, and the advice ("19.00") changed
    its content, which the ledger then refused as catalog_conflict. A ledger that never recorded
    it still refuses it."""
    from adapters.app import build_ledger
    from domain.commands import Actor, parse_command

    path = tmp_path / "bare.toml"
    path.write_text(BARE)
    with pytest.raises(CatalogError, match='write "19.00"'):
        build_ledger(db_url, catalog=str(path))
    ledger = build_ledger(db_url)
    ledger.catalogs["bare"] = Catalog.model_validate(tomllib.loads(BARE))  # as the release before read it
    ledger.default_catalog = "bare"
    admin = Actor(id="alice", role="admin")
    assert ledger.handle("ws", parse_command("add-payment-method", {"payment_method": "pm_card_visa"}), admin).ok
    ledger.close()
    again = build_ledger(db_url, catalog=str(path))
    try:
        assert again.handle("ws", parse_command("subscribe", {"plan": "pro"}), admin).ok
    finally:
        again.close()
