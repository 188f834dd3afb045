"""Commands: what an adapter asks the ledger to do, validated before anything is decided.

Each command is a frozen pydantic model; bad input stops here with `invalid_request`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

from domain.catalog import CLEARS, ID_PATTERN, Interval
from domain.errors import LedgerError
from domain.plain_errors import described, sentences
from domain.text import unprintable

ID_RULE = "1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
"""ID in words, for the messages that refuse a workspace id, actor id or idempotency key."""
ID = described(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", ID_RULE)
Id = Annotated[str, Field(pattern=ID)]
CatalogRef = Annotated[str, Field(pattern=ID_PATTERN)]
PaymentMethodId = Annotated[str, Field(pattern=described(
    r"^pm_[A-Za-z0-9_]{1,64}$", "a payment method id: pm_ and 1-64 letters, digits or '_' (pm_card_visa)"))]
Roles = Literal["owner", "admin", "billing_admin", "member", "sales", "system"]
"""The workspace's people (owner, admins, members), the vendor's `sales` (who alone set and lift
a custom contract, R9), and the `system` (the scheduler, the payment provider's webhooks)."""
Channels = Literal["web", "api", "cli", "scenario", "billing_provider", "scheduler"]
"""Through which channel a change came (R3): `scenario` for scenario files and the demo (test
time), `billing_provider` for the payment provider's webhooks."""


def clears(value: Any) -> Any:
    """CLEARS, in any case, as null: the command line cannot say null (`--addon none`), and the
    HTTP API accepts the same word."""
    return None if isinstance(value, str) and value.lower() == CLEARS else value


CONTRACTS = ("enterprise", "campus", "government", "university", "institution", "lab", "education", "discount", "custom")


class Actor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Id
    role: Roles

    @property
    def is_billing_admin(self) -> bool:
        return self.role in ("owner", "admin", "billing_admin", "system")


SYSTEM = Actor(id="scheduler", role="system")


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    billing_change: ClassVar[bool] = False
    """Plan, seat, interval or add-on change: admins only (R2), refused under contract (R9)."""
    sales_only: ClassVar[bool] = False
    """Sales' command, never a workspace's own people's: setting or lifting the contract that
    sends every self-serve change to sales (R9)."""
    waits_for_pending: ClassVar[bool] = False
    """Refused while a charge awaits its outcome (R12), as a billing change is, without being one."""

    def args(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def args_hash(self) -> str:
        text = json.dumps({"do": self.name, **self.args()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


Seats = Annotated[StrictInt, Field(ge=1, le=100_000)]
Tier = Annotated[StrictInt, Field(gt=0, le=10**9)]


class Subscribe(Command):
    name = "subscribe"
    billing_change = True
    plan: CatalogRef
    tier: Tier | None = None
    interval: Interval = "month"
    seats: Seats | None = None


class ChangePlan(Command):
    name = "change-plan"
    billing_change = True
    plan: CatalogRef
    tier: Tier | None = None
    interval: Interval | None = None
    seats: Seats | None = None
    keep_team: Id | None = None


class CancelChange(Command):
    name = "cancel-change"
    billing_change = True


class SetSeats(Command):
    name = "set-seats"
    billing_change = True
    seats: Seats


class SetMembers(Command):
    name = "set-members"
    members: Annotated[StrictInt, Field(ge=0, le=1_000_000)]


def ascii_number(value: Any) -> Any:
    """A number written in text must use the ASCII digits: Python would read '３' or '٣' as 3."""
    if isinstance(value, str) and not value.isascii():
        raise ValueError(f"{value[:20]!r} is not a number: write it with the digits 0-9")
    return value


GIGABYTES = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
"""Gigabytes as people write them: digits, an optional fraction, no sign, exponent or '_'."""


def gigabytes(value: Any) -> Any:
    """A size in GB as written, kept in one canonical form ("100.0", 100.0 and 100 are all 100):
    text, an integer, or a JSON number read as the shortest decimal that is that number (12.5,
    never 12.5000000000000001); an exponent written in text, or a sign, is refused (a JSON
    number is the number it stands for however it is written: 1e2 is 100)."""
    if isinstance(value, Decimal):  # from a recorded fact (replay)
        return Decimal(format(value.normalize(), "f")) if value.is_finite() else value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("write gigabytes as digits, e.g. 2.5")
    if isinstance(value, float):  # the shortest decimal that is this float, in fixed point (1e-05: 0.00001)
        text = format(Decimal(repr(value)), "f") if math.isfinite(value) else repr(value)
    else:
        text = value.strip() if isinstance(value, str) else str(value)
    if not GIGABYTES.fullmatch(ascii_number(text)):
        # as sent (0.0000001, not 1e-07), unless it is long: 1e+300, not the 301 digits it stands for
        written = repr(value) if isinstance(value, float) and len(text) > 24 else text
        shown = repr(written) if len(written) <= 24 else f"{written[:20]!r}... ({len(written)} characters)"
        raise ValueError(f"{shown} is not a number of GB: up to 9 digits 0-9, with an optional fraction of up "
                         "to 6, e.g. 2.5")
    return Decimal(format(Decimal(text).normalize(), "f"))


class ReportStorage(Command):
    name = "report-storage"
    gb: Annotated[Decimal, BeforeValidator(gigabytes), Field(ge=0, le=10**8, allow_inf_nan=False)]


class SetStorageAddon(Command):
    name = "set-storage-addon"
    billing_change = True
    addon: Annotated[CatalogRef | None, BeforeValidator(clears)] = None


class BuyAICredits(Command):
    name = "buy-ai-credits"
    billing_change = True
    pack: CatalogRef


class ConsumeAICredits(Command):
    name = "consume-ai-credits"
    credits: Annotated[StrictInt, Field(gt=0, le=10**9)]


class RecordUsage(Command):
    name = "record-usage"
    operations: Annotated[StrictInt, Field(gt=0, le=10**10)]


class BuyOperations(Command):
    name = "buy-operations"
    billing_change = True
    operations: Annotated[StrictInt, Field(gt=0, le=10**9)]


class AddPaymentMethod(Command):
    name = "add-payment-method"
    billing_change = True
    payment_method: PaymentMethodId


class RemovePaymentMethod(Command):
    name = "remove-payment-method"
    billing_change = True
    payment_method: PaymentMethodId


class PayInvoice(Command):
    name = "pay-invoice"
    waits_for_pending = True
    invoice: Id | None = None


class SetContract(Command):
    name = "set-contract"
    sales_only = True
    contract: Annotated[Literal[CONTRACTS] | None, BeforeValidator(clears)] = None  # type: ignore[valid-type]


class Cancel(Command):
    name = "cancel"
    billing_change = True


COMMANDS: dict[str, type[Command]] = {
    c.name: c
    for c in (
        Subscribe, ChangePlan, CancelChange, SetSeats, SetMembers, ReportStorage, SetStorageAddon,
        BuyAICredits, ConsumeAICredits, RecordUsage, BuyOperations, AddPaymentMethod,
        RemovePaymentMethod, PayInvoice, SetContract, Cancel,
    )
}


def _explain(e: ValidationError, within: tuple[str, ...] = ()) -> str:
    return "; ".join(sentences(e.errors(), within))


def parse_command(name: str, args: dict[str, Any] | None) -> Command:
    """The command `name` with `args`, or LedgerError('invalid_request') saying what is wrong."""
    cls = COMMANDS.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(COMMANDS))
        raise LedgerError("invalid_request", f"unknown command {str(name)[:40]!r}; known: {known}")
    if args is not None and not isinstance(args, dict):
        raise LedgerError("invalid_request", f"{name}: arguments must be an object")
    try:
        return cls.model_validate(args or {})
    except ValidationError as e:
        raise LedgerError("invalid_request", f"{name}: {_explain(e)}") from None


def parse_actor(data: Any) -> Actor:
    try:
        return Actor.model_validate(data)
    except ValidationError as e:
        raise LedgerError("invalid_request", _explain(e, ("actor",))) from None


def check_workspace_id(workspace_id: Any) -> str:
    if not isinstance(workspace_id, str) or not re.fullmatch(ID, workspace_id):
        raise LedgerError("invalid_request", f"workspace id must be {ID_RULE}")
    return workspace_id


MAX_REASON = 500


def check_reason(reason: Any) -> str | None:
    """Why a command was given, kept on its events and shown in the audit trail: one printable
    line (a line break could pass for another audit entry), at most MAX_REASON characters."""
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise LedgerError("invalid_request", f"a reason is text of at most {MAX_REASON} characters")
    if unprintable(reason):
        raise LedgerError("invalid_request", "a reason is one line of printable text: no line breaks or control "
                          "characters")
    return reason


RESERVED_WORKSPACE_IDS = frozenset({"verify", "status", "rebuild", "run", "check", "pending", "resolve", "confirm", "abandon", "ack",
                                    "explain", "what-if", "as-of", "publish", "create", "list", "revoke",
                                    "add", "remove", "deliver", "dead", "retry", "reconcile"})
"""Sub-command words of the command line (`audit verify`, `project status`, ...): a workspace
named so could not be told apart from the sub-command, so adapters refuse to register one."""


def check_new_workspace_id(workspace_id: Any) -> str:
    check_workspace_id(workspace_id)
    if workspace_id.lower() in RESERVED_WORKSPACE_IDS:
        raise LedgerError("invalid_request", f"workspace id {workspace_id!r} is reserved: it reads as a sub-command "
                          f"({', '.join(sorted(RESERVED_WORKSPACE_IDS))})")
    return workspace_id
