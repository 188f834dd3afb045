"""Deciding recorded history again with the engine as it is now, in memory: nothing is written.

Each run of recorded facts (replay/history.py) is turned back into what caused it, and the
aggregate decides that again, on the state it is given, with the catalog it is given:

- a command run: the command is rebuilt from the facts it recorded (COMMAND_FACTS below:
  the facts that name a command and the arguments they carry), then `decide` and `record`,
  as Ledger.handle does, after what fell due by then;
- a scheduler run: `process_due` at the run's last instant, one round as the ledger runs it;
- a settlement: the charge's recorded outcome.

Charges are settled with the outcome the provider gave when recorded (history.Outcomes), in
the run where it was recorded, so a declined card stays declined and a 3-D Secure charge
waits as long as it waited. The ledger's application and payment gateway are never called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from domain.catalog import Catalog
from domain.commands import (
    SYSTEM, Actor, AddPaymentMethod, BuyAICredits, BuyOperations, Cancel, CancelChange, ChangePlan, Command,
    ConsumeAICredits, PayInvoice, RecordUsage, RemovePaymentMethod, ReportStorage, SetContract, SetMembers, SetSeats,
    SetStorageAddon, Subscribe,
)
from domain.errors import LedgerError
from domain.subscription import Context, Subscription
from replay.history import Outcomes, Run

MAX_ROUNDS = 1000
S = Subscription

COMMAND_FACTS: dict[str, tuple[tuple[str, ...], Callable[[Any], Command]]] = {
    "subscribe": (("Subscribed", "TrialStarted"), lambda f: Subscribe(
        plan=f.plan, tier=f.tier, interval=f.interval or "month", seats=f.seats)),
    "change-plan": (("PlanUpgraded", "IntervalChanged", "TierChanged", "TrialConverted", "DowngradeApplied",
                     "DowngradeScheduled",
                     "SeatsChanged", "UpgradePaymentFailed"), lambda f: _change_plan(f)),
    "cancel-change": (("DowngradeCancelled", "CancellationCancelled"), lambda f: CancelChange()),
    "cancel": (("CancellationScheduled", "SubscriptionCanceled"), lambda f: Cancel()),
    "set-seats": (("SeatsChanged",), lambda f: SetSeats(seats=f.seats)),
    "set-members": (("MembersChanged",), lambda f: SetMembers(members=f.members)),
    "report-storage": (("StorageUsageReported",), lambda f: ReportStorage(gb=f.gb)),
    "set-storage-addon": (("StorageAddonChanged",), lambda f: SetStorageAddon(addon=f.addon)),
    "buy-ai-credits": (("AICreditPackBought",), lambda f: BuyAICredits(pack=f.pack)),
    "consume-ai-credits": (("AICreditsConsumed",), lambda f: ConsumeAICredits(credits=f.credits)),
    "record-usage": (("OperationsUsed",), lambda f: RecordUsage(operations=f.operations)),
    "buy-operations": (("OperationsBought",), lambda f: BuyOperations(operations=f.operations)),
    "add-payment-method": (("PaymentMethodAdded",), lambda f: AddPaymentMethod(payment_method=f.payment_method)),
    "remove-payment-method": (("PaymentMethodRemoved",), lambda f: RemovePaymentMethod(payment_method=f.payment_method)),
    "pay-invoice": (("ChargeRequested", "PaymentSucceeded", "PaymentFailed"), lambda f: PayInvoice(invoice=f.invoice_id)),
    "set-contract": (("ContractSet",), lambda f: SetContract(contract=f.contract)),
}
"""Per command: the facts that each stand for one such command, and the command they stand for."""


def _change_plan(fact: Any) -> Command:
    if fact.type == "SeatsChanged":  # change-plan to the same per-seat plan changes seats only
        return SetSeats(seats=fact.seats)
    if fact.type == "UpgradePaymentFailed":  # recorded before charges held their effects: the plan only
        return ChangePlan(plan=fact.plan)
    keep = fact.keep_team if fact.type == "DowngradeScheduled" else fact.kept_team
    return ChangePlan(plan=fact.plan, tier=fact.tier, interval=fact.interval, seats=fact.seats, keep_team=keep)


def facts(run: Run) -> list[Any]:
    """The facts a command decided: a charge's held effects (recorded, or dropped when it was
    declined), else the facts themselves; each as a namespace with its `type` name."""
    held = [e for e in run.events if isinstance(e, S.ChargeRequested) and e.effects]
    if held:
        return [SimpleNamespace(type=effect["type"], **effect["fields"]) for e in held for effect in e.effects]
    return [SimpleNamespace(type=type(e).__name__, **vars(e)) for e in run.events]


def commands(run: Run) -> list[Command]:
    """The commands a command run recorded (several for facts recorded before command ids,
    when one actor did the same thing twice in one instant)."""
    names, build = COMMAND_FACTS.get(run.cause, ((), None))
    found = [f for f in facts(run) if f.type in names and f.cause == run.cause]
    if run.cause == "pay-invoice":
        found = found[:1]
    return [build(f) for f in found] if build else []


@dataclass
class Replayed:
    """What one run recorded when decided again: the facts, any refusal, and the invoices
    decided (issued, or held by a charge that was then declined)."""

    events: list[Any] = field(default_factory=list)
    refused: list[LedgerError] = field(default_factory=list)

    def invoices(self) -> list[Any]:
        issued = [e for e in self.events if isinstance(e, S.InvoiceIssued)]
        ids = {e.invoice_id for e in issued}
        for request in (e for e in self.events if isinstance(e, S.ChargeRequested)):
            for effect in request.effects:
                if effect["type"] == "InvoiceIssued" and effect["fields"]["invoice_id"] not in ids:
                    issued.append(SimpleNamespace(**effect["fields"]))
                    ids.add(effect["fields"]["invoice_id"])
        return issued


def as_recorded(command: Command, ctx: Context) -> Context:
    """The context to decide a recorded command in again: a contract set or lifted by a workspace
    admin before R9 made it sales' alone was allowed then, and replay re-prices what happened
    without judging again who did it."""
    if command.sales_only and ctx.actor.role != "sales":
        return replace(ctx, actor=Actor(id=ctx.actor.id, role="sales"))
    return ctx


class Replayer:
    """Decides runs again on a given aggregate. `catalog` gives each run its catalog (the
    recorded one, or another for what-if)."""

    def __init__(self, outcomes: Outcomes, catalog: Callable[[Run], Catalog]) -> None:
        self.outcomes = outcomes
        self.catalog = catalog

    def run(self, sub: Subscription | None, run: Run) -> tuple[Subscription | None, Replayed]:
        """Decide `run` again on `sub` (changed in place; the new aggregate for a registration)."""
        out = Replayed()
        if run.kind == "register":
            for event in run.events:
                sub = event.mutate(sub)
            return sub, out
        if sub is None or run.kind == "other":
            return sub, out
        catalog = self.catalog(run)
        if run.kind == "settlement":
            self.settle_ready(sub, run, catalog)
        elif run.kind == "due":
            self.due(sub, run, catalog, rounds=MAX_ROUNDS if run.command_id is None else 1)
        else:
            self.command(sub, run, catalog, out)
        out.events = list(sub.collect_events())
        return sub, out

    def context(self, run: Run, catalog: Catalog) -> Context:
        e = run.first
        return Context(run.actor, e.channel, run.at, catalog, run.cause, e.reason, e.idempotency_key, e.args_hash,
                       run.command_id)

    def command(self, sub: Subscription, run: Run, catalog: Catalog, out: Replayed) -> None:
        ctx = self.context(run, catalog)
        self.catch_up(sub, run, catalog)
        for command in commands(run):
            try:
                decision = sub.decide(command, as_recorded(command, ctx))
            except LedgerError as e:
                out.refused.append(e)
                continue
            sub.record(decision, ctx)
            self.settle_ready(sub, run, catalog)

    def catch_up(self, sub: Subscription, run: Run, catalog: Catalog) -> None:
        """What fell due by the run's instant, as Ledger.handle records before deciding."""
        ctx = Context(SYSTEM, "scheduler", run.at, catalog, "advance")
        for _ in range(MAX_ROUNDS):
            before = len(sub.pending_events)
            self.settle_ready(sub, run, catalog)
            sub.process_due(ctx)
            if len(sub.pending_events) == before:
                return

    def due(self, sub: Subscription, run: Run, catalog: Catalog, rounds: int) -> None:
        """A scheduler round up to the run's last instant. Facts from before command ids hold
        whole catch-ups (payments were then taken inline), so those run until nothing moves."""
        ctx = Context(SYSTEM, "scheduler", run.last.timestamp, catalog, "advance", command_id=run.command_id)
        for _ in range(rounds):
            before = len(sub.pending_events)
            self.settle_ready(sub, run, catalog)
            sub.process_due(ctx)
            self.settle_ready(sub, run, catalog)
            if len(sub.pending_events) == before:
                return

    def settle_ready(self, sub: Subscription, run: Run, catalog: Catalog) -> None:
        """Record the outcome of every pending charge whose outcome was recorded by this run."""
        ctx = Context(SYSTEM, "scheduler", run.last.timestamp, catalog, "payment")
        for invoice_id, pending in list(sub.pending_charges.items()):
            result = self.outcomes.answer(invoice_id, pending, run.index)
            if result is None or (result.outcome == "action_required" and pending["action_required"]):
                continue
            sub.settle(invoice_id, result, ctx)
