"""Every money formula of the ledger, as pure functions: state in, lines out.

Each line is rounded once, half-up to the currency's minor unit, and carries the
arithmetic that produced it so that `explain` can show it to a person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.catalog import Catalog, Plan, Policy, Tier
from domain.money import ZERO, fmt, round_half_up
from domain.periods import Period, days_between


@dataclass(frozen=True)
class Line:
    """One invoice line. Credits are negative."""

    kind: str
    description: str
    amount: Decimal
    quantity: int
    period_start: datetime | None
    period_end: datetime | None
    formula: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Priced:
    """A recurring item at a unit price for a quantity over one interval (plan, seats, add-on)."""

    key: str
    description: str
    unit_price: Decimal
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Fraction:
    """The share of a period left after an instant: num/den days (or seconds)."""

    num: int
    den: int
    unit: str

    def __str__(self) -> str:
        return f"{self.num}/{self.den} {self.unit}"


def remaining_fraction(period: Period, at: datetime, policy: Policy) -> Fraction:
    """The share of `period` left at `at`, clamped to [0, 1]: exact seconds, or whole calendar
    days (start included, end excluded) over the period's real length."""
    if policy.proration == "second":
        den = int((period.end - period.start).total_seconds())
        num = int((period.end - at).total_seconds())
        return Fraction(max(min(num, den), 0), den, "seconds")
    den = days_between(period.start, period.end)
    num = days_between(at, period.end)
    return Fraction(max(min(num, den), 0), den, "days")


def plan_item(plan: Plan, interval: str, seats: int | None, tier: Tier | None) -> Priced | None:
    """What a plan costs per interval, or None for a plan that bills nothing."""
    if not plan.billable:
        return None
    if tier is not None:
        ops = f"{tier.operations:,} operations/{tier.interval}"
        return Priced("plan", f"{plan.name} ({ops})", tier.price, 1)
    price = plan.prices[interval]  # type: ignore[index]
    if plan.per_seat:
        return Priced("plan", f"{plan.name} per seat ({interval}ly)", price, seats or 1)
    return Priced("plan", f"{plan.name} ({interval}ly)", price, 1)


def addon_item(catalog: Catalog, addon_id: str | None, interval: str) -> Priced | None:
    addon = catalog.addon(addon_id) if addon_id else None
    if addon is None:
        return None
    return Priced("addon", f"{addon.name} ({interval}ly)", addon.prices[interval], 1)  # type: ignore[index]


def full_charge(item: Priced, period: Period, currency: str, kind: str) -> Line:
    amount = round_half_up(item.total, currency)
    formula = f"{fmt(item.unit_price, currency)} x {item.quantity} = {fmt(amount, currency)}"
    return Line(kind, item.description, amount, item.quantity, period.start, period.end, formula)


def _prorated(item: Priced, period: Period, at: datetime, policy: Policy, currency: str) -> tuple[Decimal, str]:
    """The item over the rest of the period, rounded once, and the arithmetic that got there."""
    f = remaining_fraction(period, at, policy)
    exact = item.total * f.num / f.den
    amount = round_half_up(exact, currency)
    return amount, f"{fmt(item.unit_price, currency)} x {item.quantity} x {f} = {exact:.6f} -> {fmt(amount, currency)}"


def prorated_charge(item: Priced, period: Period, at: datetime, policy: Policy, currency: str, kind: str) -> Line:
    """The item for the rest of the period (a new plan, added seats, a new add-on)."""
    amount, formula = _prorated(item, period, at, policy, currency)
    return Line(kind, f"{item.description}, remaining time", amount, item.quantity, at, period.end, formula)


def unused_time_credit(
    item: Priced, period: Period, at: datetime, policy: Policy, currency: str, kind: str, charged_net: Decimal
) -> Line | None:
    """Credit for the unused part of the period, capped at what was charged for it net of
    earlier credits, so consecutive changes in one period never over-credit."""
    amount, formula = _prorated(item, period, at, policy, currency)
    cap = max(charged_net, ZERO)
    if amount > cap:
        formula += f", capped at {fmt(cap, currency)} charged net this period"
        amount = cap
    if amount <= 0:
        return None
    return Line(kind, f"Unused time on {item.description}", -amount, item.quantity, at, period.end, formula)


@dataclass(frozen=True)
class SeatChanges:
    """This period's seat lines so far: their exact (unrounded) sum and what they billed."""

    exact: Decimal = ZERO
    billed: Decimal = ZERO


def seat_change(item: Priced, removed: bool, period: Period, at: datetime, policy: Policy, currency: str,
                so_far: SeatChanges, credit_cap: Decimal) -> tuple[Line | None, SeatChanges]:
    """Seats added (a charge) or removed (a credit, policy `seat_removal_credit`) for the rest of
    the period (R21). The line is the period's seat changes rounded once, less what their earlier
    lines billed: however seats come and go in a period, its seat lines add up to their exact sum
    rounded once, so adding seats and removing them one by one never credits a cent more than
    was charged (rounding each line alone did: 3 x 6.18 back for 18.53). A credit is capped at
    what the period's plan was charged net."""
    f = remaining_fraction(period, at, policy)
    magnitude = item.total * f.num / f.den
    total = so_far.exact + (-magnitude if removed else magnitude)
    amount = round_half_up(total, currency) - so_far.billed
    formula = f"{fmt(item.unit_price, currency)} x {item.quantity} x {f} = {magnitude:.6f}"
    if so_far != SeatChanges():
        formula += (f"; with the period's earlier seat changes {total:+.6f} -> "
                    f"{round_half_up(total, currency):+}, less {so_far.billed:+} they billed")
    formula += f" -> {fmt(abs(amount), currency)}"
    cap = max(credit_cap, ZERO)
    if removed and -amount > cap:
        formula += f", capped at {fmt(cap, currency)} charged net this period"
        amount, total = -cap, so_far.billed - cap
    if amount == 0 or (amount > 0) == removed:  # rounding alone: nothing to bill
        return None, SeatChanges(total, so_far.billed)
    kind, what = ("seat_credit", "Unused time on ") if removed else ("seat_charge", "")
    line = Line(kind, f"{what}{item.description}{'' if removed else ', remaining time'}", amount, item.quantity, at,
                period.end, formula)
    return line, SeatChanges(total, so_far.billed + amount)


def one_time_charge(kind: str, description: str, unit_price: Decimal, quantity: int, currency: str, at: datetime) -> Line:
    """A one-time charge: never prorated (AI credit packs, R23)."""
    exact = unit_price * quantity
    amount = round_half_up(exact, currency)
    formula = f"{fmt(unit_price, currency)} x {quantity:,} = {fmt(amount, currency)}"
    return Line(kind, description, amount, quantity, at, None, formula)


def ai_credit_revenue(held: Decimal, used: int, purchased: int, currency: str) -> tuple[Decimal, str]:
    """Revenue recognised when `used` of the `purchased` AI credits still held are spent (R23):
    the pack liability `held` for them, pro rata, rounded once. Spending the last of them
    recognises all that is held, so no rounding remainder is ever left in the liability."""
    if used <= 0:
        return ZERO, "no purchased credits used"
    if used >= purchased:
        return held, f"all {purchased:,} purchased credits used = {fmt(held, currency)} held"
    exact = held * used / purchased
    amount = round_half_up(exact, currency)
    return amount, f"{fmt(held, currency)} held x {used:,}/{purchased:,} credits = {exact:.6f} -> {fmt(amount, currency)}"


def ai_grant_entitlement(plan: Plan, seats: int | None) -> int:
    """Subscription AI credits a paid plan grants per grant window (R23): per seat, or per
    workspace on a flat plan; a plan that bills nothing grants none."""
    return plan.ai_credits_per_seat * (seats or 1) if plan.billable else 0


def prorated_grant_worth(worth: int, rate: int, new_rate: int, window: Period, at: datetime,
                         policy: Policy) -> tuple[int, str]:
    """What a grant window is worth once the rest of it is paid at `new_rate` instead of `rate`
    credits per window (R23): the rest of the window is taken off at the difference, rounded
    up to whole credits so that a workspace never keeps a credit it did not pay for."""
    f = remaining_fraction(window, at, policy)
    cut = -(-(rate - new_rate) * f.num // f.den)
    after = max(worth - cut, 0)
    formula = f"{worth:,} - ({rate:,} - {new_rate:,}) x {f} = {worth:,} - {cut:,} -> {after:,} credits"
    return after, formula


def operations_pack_charge(operations: int, rate: Rate, currency: str, at: datetime) -> Line:
    """Extra operations at the plan's price per operation, computed exactly (price x n / ops)."""
    exact = rate.value(operations)
    amount = round_half_up(exact, currency)
    formula = f"({rate}) x {operations:,} = {exact:.6f} -> {fmt(amount, currency)}"
    return Line("operations_pack", f"{operations:,} extra operations", amount, operations, at, None, formula)


@dataclass(frozen=True)
class Rate:
    """A price per operation kept as a tier's price over its operations, so it stays exact."""

    price: Decimal
    operations: int

    @classmethod
    def of(cls, tier: Tier) -> Rate:
        return cls(tier.price, tier.operations)

    @property
    def per_operation(self) -> Decimal:
        return self.price / self.operations

    def value(self, operations: int) -> Decimal:
        return self.price * operations / self.operations

    def __str__(self) -> str:
        return f"{self.price} / {self.operations:,} ops = {self.per_operation.normalize()}/op"


def prorated_operations(operations: int, window: Period, at: datetime, policy: Policy) -> int:
    """A tier's monthly operations for the rest of `window` (R11, R16): operations x remaining
    fraction, rounded down to whole operations."""
    f = remaining_fraction(window, at, policy)
    return operations * f.num // f.den


def operations_overage_charge(pools: list[tuple[int, Rate]], currency: str, at: datetime) -> Line:
    """Operations used beyond the allowance (policy `overage = "bill"`), each at the price per
    operation of the plan they were used on, as one line of the next invoice."""
    used = sum(n for n, _ in pools)
    exact = sum((rate.value(n) for n, rate in pools), ZERO)
    amount = round_half_up(exact, currency)
    parts = " + ".join(f"({rate}) x {n:,}" for n, rate in pools)
    formula = f"{parts} = {exact:.6f} -> {fmt(amount, currency)}"
    return Line("operations_overage", f"{used:,} operations beyond the allowance", amount, used, at, None, formula)


def operations_credit(pools: list[tuple[int, Rate]], cap: Decimal, currency: str, at: datetime) -> Line | None:
    """Unused operations, each pool at the rate it was paid at, capped at the new bill (R16, R27).
    Carried-over operations keep the rate of the plan they were bought on (R18)."""
    pools = [(n, rate) for n, rate in pools if n > 0]
    unused = sum(n for n, _ in pools)
    if unused <= 0:
        return None
    exact = sum((rate.value(n) for n, rate in pools), ZERO)
    amount = round_half_up(exact, currency)
    parts = " + ".join(f"({rate}) x {n:,}" for n, rate in pools)
    formula = f"{parts} unused = {exact:.6f} -> {fmt(amount, currency)}"
    if amount > cap:
        formula += f", capped at the bill {fmt(cap, currency)}"
        amount = max(cap, ZERO)
    if amount <= 0:
        return None
    return Line("operations_credit", f"Credit for {unused:,} unused operations", -amount, unused, at, None, formula)


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    credit_applied: Decimal
    amount_due: Decimal
    credit_issued: Decimal
    credit_forfeited: Decimal


def totals(lines: list[Line], balance: Decimal, policy: Policy) -> Totals:
    """Apply the account's billing credit to a bill. A credit never exceeds the bill it is
    applied to (R27); a net-negative bill becomes billing credit, never cash (R10), unless
    the catalog forfeits the overflow."""
    subtotal = sum((line.amount for line in lines), ZERO)
    if subtotal >= 0:
        applied = min(max(balance, ZERO), subtotal)
        return Totals(subtotal, applied, subtotal - applied, ZERO, ZERO)
    return Totals(subtotal, ZERO, ZERO, *overflow(subtotal, policy))


def overflow(subtotal: Decimal, policy: Policy) -> tuple[Decimal, Decimal]:
    """What a bill's credit beyond it becomes (R10, R27): (billing credit issued, forfeited)."""
    if subtotal >= 0:
        return ZERO, ZERO
    return (-subtotal, ZERO) if policy.credit_overflow == "balance" else (ZERO, -subtotal)


def lowest_rate(pools: list[tuple[int, Rate]]) -> Rate | None:
    """Carried-over operations are valued at the lowest rate any of them was paid at (R18)."""
    return min((rate for n, rate in pools if n), key=lambda rate: rate.per_operation, default=None)


def carried_operations(unused: int, new_tier: Tier, policy: Policy) -> tuple[int, int]:
    """Unused operations carried into a downgraded plan (R18): (carried, first-cycle total),
    e.g. 10,000 left + a 40,000 tier = 50,000 in the first month."""
    carried = max(unused, 0) if policy.operations_carry_over else 0
    return carried, carried + new_tier.monthly_operations


def direction(current_plan: Plan, current_interval: str, current_tier: Tier | None,
              target_plan: Plan, target_interval: str, target_tier: Tier | None) -> str:
    """'upgrade', 'downgrade' or 'same' (R4, R16, R18): rank first; within a plan, tiers by
    operations per month, then monthly -> annual is an upgrade and annual -> monthly a downgrade."""
    if target_plan.rank != current_plan.rank:
        return "upgrade" if target_plan.rank > current_plan.rank else "downgrade"
    if current_tier and target_tier and target_tier.monthly_operations != current_tier.monthly_operations:
        return "upgrade" if target_tier.monthly_operations > current_tier.monthly_operations else "downgrade"
    if target_interval != current_interval:
        return "upgrade" if target_interval == "year" else "downgrade"
    return "same"
