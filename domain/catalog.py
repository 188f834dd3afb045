"""The product catalog: plans, tiers, add-ons, credit packs and the billing policy.

Where products differ (proration granularity, downgrade timing, upgrade credit,
seat-removal credit, operations carry-over) the difference is a field of
`Policy`, never a branch on the product's name. Catalogs are TOML files
validated by pydantic; `docs/catalogs.md` documents the format.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator, PrivateAttr

from domain.catalog_files import (  # noqa: F401 (CLEARS, MAX_COUNT, MAX_DAYS: re-exported)
    CLEARS, MAX_COUNT, MAX_DAYS, MAX_FILE_BYTES, bounded, nested_too_deeply, never_applied, prices_not_plain,
    unprintable_texts,
)
from domain.money import minor_units, parse_amount
from domain.plain_errors import described, sentence

Interval = Literal["month", "year"]
Price = Annotated[Decimal, BeforeValidator(parse_amount)]
ID_PATTERN = described(r"^[a-z0-9][a-z0-9_-]{0,39}$",
                       "1-40 lowercase letters, digits, '_' or '-', starting with a letter or digit")
BUILT_IN = ("forms", "workspace", "operations")


class _Model(BaseModel):
    """Strict: a count is an integer and a flag a boolean as written (`max_seats = true` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Policy(_Model):
    proration: Literal["day", "second"] = "day"
    upgrade_timing: Literal["immediate"] = "immediate"
    downgrade_timing: Literal["period_end", "immediate_credit", "immediate_new_cycle"] = "period_end"
    upgrade_credit: Literal["unused_time", "unused_operations"] = "unused_time"
    upgrade_new_cycle: bool = Field(False, description="an upgrade starts a new billing cycle at the change (004)")
    seat_removal_credit: bool = False
    operations_carry_over: bool = False
    credit_overflow: Literal["balance", "forfeit"] = Field(
        "balance", description="what happens to the part of a credit beyond its bill (R27)"
    )
    trial_fallback: str | None = None
    downgrade_notice_days: int = Field(7, ge=0, le=60)
    operations_pack: int = Field(10_000, gt=0)
    carry_over_days: dict[Interval, int] = Field(default_factory=lambda: {"month": 30, "year": 365})
    overage: Literal["block", "bill", "allow"] = Field(
        "allow", description="operations beyond the allowance: refused, billed on the next invoice, or forgiven"
    )
    dunning_retry_days: list[int] = Field(
        default_factory=list, max_length=10,
        description="days after an invoice's first failed payment on which it is retried (R8)",
    )
    dunning_final_action: Literal["suspend", "cancel", "none"] = Field(
        "none", description="after the last retry fails: lock paid features (R19), end the subscription, or "
        "nothing (renewals go on while the invoice stays open, as catalogs written before dunning did)"
    )
    """The defaults of policies added after catalogs were first published reproduce what those
    catalogs meant then, so a published catalog keeps deciding as it did (replay verify); the
    built-in catalogs set every one of them explicitly."""
    ai_grant_cadence: Literal["month", "period"] = Field(
        "month", description="subscription AI credits are granted every month (annual plans too) or once a period (R23)"
    )


    @field_validator("dunning_retry_days")
    @classmethod
    def _retries_end_before_the_next_renewal(cls, days: list[int]) -> list[int]:
        """Dunning run on time ends before the shortest period (28 days) does, so no renewal meets
        an invoice still being retried (a late scheduler's retries hold the period end back:
        domain/subscription/scheduler.py next_due)."""
        if any(d < 1 or d > 27 for d in days):
            raise ValueError("retry days must be 1 to 27 days after the failure")
        if any(a >= b for a, b in zip(days, days[1:])):
            raise ValueError("retry days must increase")
        return days


class Tier(_Model):
    operations: int = Field(gt=0)
    interval: Interval
    price: Price = Field(gt=0)

    @property
    def monthly_operations(self) -> int:
        """The allotment granted at each monthly reset (annual tiers reset monthly, R18)."""
        return self.operations // 12 if self.interval == "year" else self.operations


class Plan(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    rank: int = Field(ge=0)
    kind: Literal["free", "trial", "paid", "contract"]
    prices: dict[Interval, Price] = Field(default_factory=dict)
    per_seat: bool = False
    seats: int | None = Field(None, gt=0, description="seat limit of a flat plan; None = unlimited")
    max_seats: int = Field(1000, gt=0, description="most seats a per-seat plan sells")
    storage_gb: int = Field(ge=0)
    features: list[str] = Field(default_factory=list)
    ai_credits_per_seat: int = Field(0, ge=0)
    teams: int | None = Field(None, gt=0)
    trial_days: int | None = Field(None, gt=0)
    tiers: list[Tier] = Field(default_factory=list)

    @field_validator("prices")
    @classmethod
    def _positive(cls, prices: dict[str, Decimal]) -> dict[str, Decimal]:
        for interval, price in prices.items():
            if price <= 0:
                raise ValueError(f"price for {interval} must be positive")
        return prices

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.kind == "paid" and not (self.prices or self.tiers):
            raise ValueError(f"paid plan {self.id!r} needs prices or tiers")
        if self.kind == "trial" and not self.trial_days:
            raise ValueError(f"trial plan {self.id!r} needs trial_days")
        if self.per_seat and self.tiers:
            raise ValueError(f"plan {self.id!r} cannot be both per-seat and tiered")
        keys = [(t.interval, t.operations) for t in self.tiers]
        if len(keys) != len(set(keys)):
            raise ValueError(f"plan {self.id!r} lists a tier twice")
        return self

    @property
    def billable(self) -> bool:
        return self.kind == "paid"

    def tier(self, operations: int, interval: str) -> Tier | None:
        return next((t for t in self.tiers if t.operations == operations and t.interval == interval), None)


class AddOn(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    storage_gb: int = Field(gt=0)
    prices: dict[Interval, Price]


class CreditPack(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    credits: int = Field(gt=0)
    price: Price = Field(gt=0)


class Catalog(_Model):
    id: str = Field(pattern=ID_PATTERN)
    version: str = Field(min_length=1, max_length=40)
    name: str
    currency: str
    policy: Policy = Field(default_factory=Policy)
    plans: list[Plan]
    addons: list[AddOn] = Field(default_factory=list)
    credit_packs: list[CreditPack] = Field(default_factory=list)
    _content_hash: str = PrivateAttr(default="")

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, currency: str) -> str:
        minor_units(currency)
        return currency

    def trial_fallback(self) -> Plan | None:
        """Where an unconverted trial lands (R15): the policy's plan, else the first free plan."""
        named = self.policy.trial_fallback
        return self.plan(named) if named else next((p for p in self.plans if p.kind == "free"), None)

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        ids = [p.id for p in self.plans] + [a.id for a in self.addons] + [c.id for c in self.credit_packs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"ids used twice: {', '.join(dupes)}")
        ranks = [p.rank for p in self.plans]
        shared = sorted({r for r in ranks if ranks.count(r) > 1})
        if shared:
            named = "; ".join(f"rank {r}: {', '.join(p.id for p in self.plans if p.rank == r)}" for r in shared)
            raise ValueError(f"plan ranks must differ (a rank orders upgrades and downgrades): {named}")
        fallback = self.policy.trial_fallback
        if fallback and self.plan(fallback) is None:
            raise ValueError(f"policy.trial_fallback names unknown plan {fallback!r}")
        if self.policy.upgrade_credit == "unused_operations" and not any(p.tiers for p in self.plans):
            raise ValueError("policy.upgrade_credit = unused_operations needs plans with tiers")
        return self

    @model_validator(mode="after")
    def _whole_minor_units(self) -> Catalog:
        """A price must be payable: no finer than the currency's minor unit (19.999 USD, 19.50 JPY)."""
        places = minor_units(self.currency)
        finer = [f"{where} = {price}" for where, price in self._prices() if price != round(price, places)]
        if finer:
            unit = "whole units" if places == 0 else f"at most {places} decimal place{'s' if places > 1 else ''}"
            raise ValueError(f"{self.currency} prices take {unit}: {', '.join(finer)}")
        return self

    def _prices(self) -> list[tuple[str, Decimal]]:
        found = []
        for i, plan in enumerate(self.plans):
            found += [(f"plans[{i}].prices.{k}", v) for k, v in plan.prices.items()]
            found += [(f"plans[{i}].tiers[{j}].price", t.price) for j, t in enumerate(plan.tiers)]
        for i, addon in enumerate(self.addons):
            found += [(f"addons[{i}].prices.{k}", v) for k, v in addon.prices.items()]
        found += [(f"credit_packs[{i}].price", c.price) for i, c in enumerate(self.credit_packs)]
        return found

    @model_validator(mode="after")
    def _identity(self) -> Catalog:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        self._content_hash = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return self

    @property
    def content_hash(self) -> str:
        """The catalog's identity beside id and version: a hash of its content, so two catalogs
        with one id and version but other prices can never pass for each other."""
        return self.__pydantic_private__["_content_hash"]  # type: ignore[index] (each command: skip pydantic's __getattr__)

    def plan(self, plan_id: str) -> Plan | None:
        return _lookup(self, "plan", plan_id, self.plans)  # type: ignore[no-any-return]

    def addon(self, addon_id: str) -> AddOn | None:
        return _lookup(self, "addon", addon_id, self.addons)  # type: ignore[no-any-return]

    def credit_pack(self, pack_id: str) -> CreditPack | None:
        return next((c for c in self.credit_packs if c.id == pack_id), None)

    def storage_limit(self, plan: Plan | None, addon_id: str | None) -> int:
        """GB a plan allows with a storage add-on (R6, R19, R22)."""
        addon = self.addon(addon_id) if addon_id else None
        return (plan.storage_gb if plan else 0) + (addon.storage_gb if addon else 0)


_LOOKUPS: dict[int, tuple[Catalog, dict[tuple[str, str], Any]]] = {}
"""Plans and add-ons already looked up by id, per catalog (state views look them up for every
event): kept outside the model, whose equality compares its private attributes too."""


def _lookup(catalog: Catalog, kind: str, item_id: str, items: Any) -> Any:
    """An item by id, remembered per catalog object: pricing looks plans up on every event."""
    index = _lookups(catalog)
    key = (kind, item_id)
    try:
        return index[key]
    except KeyError:
        found = index[key] = next((i for i in items if i.id == item_id), None)
        return found


def _lookups(catalog: Catalog) -> dict[tuple[str, str], Any]:
    found = _LOOKUPS.get(id(catalog))
    if found is None or found[0] is not catalog:
        if len(_LOOKUPS) >= 64:
            _LOOKUPS.clear()
        found = _LOOKUPS[id(catalog)] = (catalog, {})
    return found[1]


class CatalogError(ValueError):
    """A catalog file that cannot be used, with every problem listed."""


class NewerRules(CatalogError):
    """A file only rules newer than a ledger's catalogs refuse (prices in plain digits, fields a
    plan's kind never applies, catalog_files.py): a ledger that recorded this very content under
    its id and version still reads it (adapters/app.py build_ledger); anything else is refused."""

    def __init__(self, message: str, catalog: Catalog) -> None:
        super().__init__(message)
        self.catalog = catalog


class CatalogConflict(CatalogError):
    """Same id and version as a catalog already known, other content: an impersonation."""

    code = "catalog_conflict"


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """A catalog file's text as a Catalog, with what a file may set checked (catalog_files.py)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not valid TOML: {e}") from None
    except RecursionError:
        data = None
    if data is None or nested_too_deeply(data):
        raise CatalogError(f"{source}: not a catalog: its arrays or tables are nested too deeply")
    unreadable = list(prices_not_plain(data, loaded_before=False)) + list(unprintable_texts(data))
    if unreadable:
        raise CatalogError(f"{source}: {len(unreadable)} problem(s):\n" + "\n".join(f"  - {p}" for p in unreadable[:20]))
    written = list(prices_not_plain(data, loaded_before=True))
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as e:
        told = [*written, *(sentence(err) for err in e.errors())]
        raise CatalogError(f"{source}: {len(told)} problem(s):\n" + "\n".join(f"  - {p}" for p in told)) from None
    found = bounded(catalog)
    if found:
        raise CatalogError(f"{source}: {len(found)} problem(s):\n" + "\n".join(f"  - {p}" for p in found))
    newer = written + never_applied(catalog)
    if newer:
        raise NewerRules(f"{source}: {len(newer)} problem(s):\n" + "\n".join(f"  - {p}" for p in newer), catalog)
    return catalog


def load_catalog(name_or_path: str | Path) -> Catalog:
    """A built-in catalog by name (forms, workspace, operations) or a TOML file by path."""
    if str(name_or_path) in BUILT_IN:
        text = resources.files("domain.catalogs").joinpath(f"{name_or_path}.toml").read_text("utf-8")
        return parse_catalog(text, f"built-in catalog {name_or_path}")
    path = Path(name_or_path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise CatalogError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB: not a catalog")
        text = raw.decode("utf-8-sig")  # a byte order mark, as Windows editors write, is not content
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file, and not a built-in catalog ({', '.join(BUILT_IN)})") from None
    except OSError as e:
        raise CatalogError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not a text file (a catalog is UTF-8 TOML)") from None
    catalog = parse_catalog(text, str(path))
    if catalog.id in BUILT_IN:
        check_identity(catalog, load_catalog(catalog.id))
    return catalog


def check_identity(catalog: Catalog, known: Catalog) -> None:
    """A catalog is its id, version and content: one that reuses a known id and version with
    other content would reprice customers under a name that is not its own."""
    if (catalog.id, catalog.version) == (known.id, known.version) and catalog.content_hash != known.content_hash:
        raise CatalogConflict(
            f"catalog {catalog.id} version {catalog.version} already exists with other content "
            f"({known.content_hash[:19]}..., this file {catalog.content_hash[:19]}...): give it a new version or id")


def builtin_catalogs() -> dict[str, Catalog]:
    return {name: load_catalog(name) for name in BUILT_IN}
