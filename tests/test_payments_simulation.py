"""Money moves exactly once, in a seeded simulation: random command streams on three
workspaces (two on the workspace catalog, one on forms) through two Ledger instances on one
database, with repeated idempotency keys, declined cards, 3-D Secure confirmed or abandoned,
time passing, and faults injected between a charge and its record: the other ledger writes
in between, or the process dies (a BaseException) and a fresh ledger resolves what it left.

After each run the gateway's rows and the ledger's facts agree (tests/payment_checks.py),
the journal balances, its cash is the money collected, and every read model equals its
rebuild. A failing run names its seed; `PAYMENTS_SIM_SEEDS=17,18` reruns just those (the
run is deterministic), `PAYMENTS_SIM_RUNS=200` tries more.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.app import build_ledger, read_models
from adapters.payments import TestPaymentGateway
from domain.commands import parse_command
from domain.errors import LedgerError
from domain.ledger import Ledger, TestClock
from domain.payments import ChargeRequest, ChargeResult, GatewayUnavailable
from domain.subscription.events import KEY_RETENTION
from projections.journal import trial_balance
from tests.conftest import ADMIN, utc
from tests.payment_checks import key_problems, money_problems
from tests.readmodels import check_against_ledger, snapshot

START = "2026-04-11T00:00:00"
STEPS = 70
WORKSPACES = {"w1": "workspace", "w2": "workspace", "w3": "forms"}
CARDS = (["pm_card_visa"] * 5 + ["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"]
         + ["pm_card_authenticationRequired"] * 3)
PAYMENT_OUTCOMES = {"payment_failed", "payment_action_required", "payment_pending"}


def seeds(default: int) -> list[int]:
    chosen = os.environ.get("PAYMENTS_SIM_SEEDS")
    if chosen:
        return [int(s) for s in chosen.split(",")]
    return list(range(int(os.environ.get("PAYMENTS_SIM_RUNS", default))))


def versions(result: Any) -> list[int]:
    return [e.originator_version for e in result.events]


class SimulatedDeath(BaseException):
    """The process died right here: nothing after this point of its work runs."""


class FaultyGateway:
    """One simulated process's view of the persisted test gateway: after money moved (a charge
    or a cancel answered) the simulation may lose the answer, run the other process, or kill
    this one."""

    def __init__(self, url: str, sim: Simulation, name: str) -> None:
        self.inner = TestPaymentGateway(url)
        self.sim = sim
        self.name = name

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.sim.before_gateway(self.name, request.idempotency_key)
        result = self.inner.charge(request)
        self.sim.after_gateway(self.name, request.idempotency_key, result)
        return result

    def cancel(self, idempotency_key: str) -> ChargeResult:
        self.sim.before_gateway(self.name, idempotency_key)
        result = self.inner.cancel(idempotency_key)
        self.sim.after_gateway(self.name, idempotency_key, result)
        return result

    def confirm(self, idempotency_key: str) -> ChargeResult:
        return self.inner.confirm(idempotency_key)

    def close(self) -> None:
        self.inner.close()


class Simulation:
    def __init__(self, seed: int, url: str) -> None:
        self.seed, self.url = seed, url
        self.rng = random.Random(seed)
        self.clock = TestClock(utc(START))
        self.trace: list[str] = []
        self.quiet = True  # no faults while set (set-up, a step run inside another's charge)
        self.disturbed = False  # a fault hit the current step: its result is not checked
        self.problems: list[str] = []
        self.ledgers = {name: self.open(name) for name in "AB"}
        self.reader = build_ledger(url, catalog="workspace", clock=self.clock)
        self.used: list[tuple[str, str, str, dict[str, Any]]] = []  # (workspace, key, command, args)
        self.first_run: dict[tuple[str, str], Any] = {}  # (workspace, key) -> first result that recorded

    def open(self, name: str) -> Ledger:
        return build_ledger(self.url, catalog="workspace", clock=self.clock,
                            payments=FaultyGateway(self.url, self, name))

    def close(self) -> None:
        for ledger in [*self.ledgers.values(), self.reader]:
            ledger.close()

    def report(self, what: str) -> str:
        tail = "\n  ".join(self.trace[-40:])
        return (f"seed {self.seed} failed (rerun: PAYMENTS_SIM_SEEDS={self.seed} pytest -q "
                f"tests/test_payments_simulation.py): {what}\nlast steps:\n  {tail}")

    # ------------------------------------------------------------------ faults

    def before_gateway(self, name: str, key: str) -> None:
        """Between the recorded request and the call: death, or the other process first."""
        if self.quiet:
            return
        roll = self.rng.random()
        if roll < 0.04:
            self.die(name, f"before asking the gateway about {key}")
        elif roll < 0.12:
            self.interleave(name, key, f"the request of {key} and its charge")

    def after_gateway(self, name: str, key: str, result: ChargeResult) -> None:
        """Between the gateway's answer and its record: the answer lost, death, or the other process."""
        if self.quiet:
            return
        roll = self.rng.random()
        if roll < 0.05:
            self.trace.append(f"    the answer to {name} for {key} is lost ({result.outcome}): gateway unavailable")
            self.disturbed = True
            raise GatewayUnavailable("the provider's answer was lost")
        if roll < 0.15:
            self.die(name, f"after the gateway answered {key}: {result.outcome}")
        elif roll < 0.40:
            self.interleave(name, key, f"the answer for {key} ({result.outcome}) and its record")

    def die(self, name: str, where: str) -> None:
        self.trace.append(f"    {name} dies {where}")
        self.disturbed = True
        raise SimulatedDeath(name)

    def interleave(self, name: str, key: str, between: str) -> None:
        other = "B" if name == "A" else "A"
        self.trace.append(f"    {other} runs, for {name}, between {between}")
        self.disturbed = True
        self.quiet = True
        try:
            self.step(other, near=key.split(":")[0])
        finally:
            self.quiet = False

    def survive(self, name: str, work: Any) -> Any:
        """Run `work(ledger)` as process `name`; on its death a fresh process takes over and
        resolves the payments the dead one left (and may die too)."""
        try:
            return work(self.ledgers[name])
        except SimulatedDeath:
            pass
        while True:
            self.ledgers[name].close()
            self.ledgers[name] = self.open(name)
            self.trace.append(f"    {name} restarted: payments resolve")
            try:
                self.ledgers[name].resolve_payments()
                return None
            except SimulatedDeath:
                continue

    # ------------------------------------------------------------------ steps

    def setup(self) -> None:
        ledger = self.ledgers["A"]
        for ws, catalog in WORKSPACES.items():
            ledger.default_catalog = catalog
            plan = {"plan": "team", "interval": "month", "seats": 3} if catalog == "workspace" else {"plan": "pro"}
            for name, args in (("add-payment-method", {"payment_method": "pm_card_visa"}), ("subscribe", plan)):
                assert ledger.handle(ws, parse_command(name, args), ADMIN).ok, (ws, name)
        ledger.default_catalog = "workspace"

    def run(self, steps: int) -> list[str]:
        self.setup()
        with read_models(self.reader) as projections:
            for n in range(steps):
                self.quiet, self.disturbed = False, False
                who = self.rng.choice("AB")
                self.trace.append(f"{n}: {who}")
                self.step(who)
                if self.rng.random() < 0.1:
                    projections.catch_up()  # incrementally, part way, as a follower would
            self.quiet = True
            self.reader.resolve_payments()
            rows = self.reader.payments.charges()
            self.problems += money_problems(self.reader, rows, settled=False) + key_problems(self.reader)
            projections.catch_up()
            self.check_read_models(projections, rows)
        return self.problems

    def step(self, who: str, near: str | None = None) -> None:
        ws = near if near and self.rng.random() < 0.7 else self.rng.choice(list(WORKSPACES))
        roll = self.rng.random()
        if roll < 0.08:
            days = self.rng.randint(1, 45)
            self.trace.append(f"  wait {days} days, {who} advances")
            self.clock.move_to(self.clock.now() + timedelta(days=days))
            self.survive(who, lambda ledger: ledger.advance())
        elif roll < 0.20:
            self.confirm_or_abandon(who)
        elif roll < 0.23:
            self.trace.append(f"  {who}: payments resolve")
            self.survive(who, lambda ledger: ledger.resolve_payments())
        else:
            self.command(who, ws)

    def confirm_or_abandon(self, who: str) -> None:
        """The customer completes 3-D Secure, or the charge awaiting them is given up."""
        waiting = [(ws, p) for ws in WORKSPACES for p in self.ledgers[who].get(ws).pending_charges.values()
                   if p["action_required"]]
        if not waiting:
            return
        ws, pending = self.rng.choice(waiting)
        key = pending["charge_key"]
        if self.rng.random() < 0.5:
            self.trace.append(f"  the customer confirms {key}; {who} resolves {ws}")
            self.ledgers[who].payments.confirm(key)
            self.survive(who, lambda ledger: ledger.resolve_payments(ws))
        else:
            self.trace.append(f"  {who} abandons {key}")

            def abandon(ledger: Ledger) -> Any:
                try:
                    return ledger.abandon_payment(ws, pending["invoice_id"])
                except LedgerError as e:  # settled meanwhile (a renewal abandoned it), or no answer
                    assert e.code in ("no_pending_payment", "payment_pending"), e
                    return None
            self.survive(who, abandon)

    def command(self, who: str, ws: str) -> None:
        rng = self.rng
        roll = rng.random()
        if self.used and roll < 0.15:
            ws, key, name, args = rng.choice(self.used)  # the same key and arguments again
        elif self.used and roll < 0.22:
            ws, key, _, _ = rng.choice(self.used)  # the same key, other arguments
            name, args = self.random_command(ws)
        else:
            key = f"k{len(self.used)}" if rng.random() < 0.8 else None
            name, args = self.random_command(ws)
        ledger = self.ledgers[who]
        before = ledger.get(ws)
        command = parse_command(name, args)
        entry = before.idempotency.get(key) if before and key else None
        if entry is not None and entry["at"] < self.clock.now() - KEY_RETENTION:
            entry = None  # forgotten: its reuse is a new command
        self.trace.append(f"  {who} {ws} {name} {args} key={key}")
        result = self.survive(who, lambda ledger: ledger.handle(ws, command, ADMIN, idempotency_key=key))
        if key and (ws, key, name, args) not in self.used:
            self.used.append((ws, key, name, args))
        if result is None:
            return
        self.trace[-1] += f" -> {result.error.code if result.error else 'ok'}{' (replayed)' if result.replayed else ''}"
        if not self.disturbed:
            self.check_result(ws, key, command, entry, before, result)

    def random_command(self, ws: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        if WORKSPACES[ws] == "forms":
            choices: list[tuple[str, dict[str, Any]]] = [
                ("change-plan", {"plan": rng.choice(["pro", "team", "free"])}),
                ("change-plan", {"plan": rng.choice(["pro", "team"]), "interval": rng.choice(["month", "year"])}),
                ("subscribe", {"plan": rng.choice(["pro", "team"])}),
                ("set-members", {"members": rng.randint(0, 5)}),
            ]
        else:
            choices = [
                ("change-plan", {"plan": rng.choice(["team", "business"])}),
                ("change-plan", {"plan": rng.choice(["team", "business", "free"]), "interval": rng.choice(["month", "year"])}),
                ("set-seats", {"seats": rng.randint(1, 8)}),
                ("buy-ai-credits", {"pack": "ai-1000"}),
                ("set-storage-addon", {"addon": rng.choice(["storage-100gb", None])}),
                ("set-members", {"members": rng.randint(0, 6)}),
                ("consume-ai-credits", {"credits": rng.randint(100, 1500)}),
                ("subscribe", {"plan": "team", "seats": rng.randint(1, 4)}),
            ]
        choices += [("add-payment-method", {"payment_method": rng.choice(CARDS)})] * 3
        choices += [("pay-invoice", {}), ("cancel-change", {})]
        if rng.random() < 0.1:
            choices.append(("cancel", {}))
        return rng.choice(choices)

    # ------------------------------------------------------------------ checks

    def check_result(self, ws: str, key: str | None, command: Any, entry: Any, before: Any, result: Any) -> None:
        """What one undisturbed command must return: a conflict or a replay by key, and a
        refusal records nothing but what was already due."""
        after = self.ledgers["A"].get(ws)
        recorded = (after.version if after else 0) - (before.version if before else 0)
        if entry is not None and entry["hash"] != command.args_hash():
            if not result.error or result.error.code != "idempotency_conflict":
                self.problems.append(f"{ws} key {key} reused with other arguments: {result.error}")
        elif entry is not None:
            first = self.first_run.get((ws, key))
            if not result.replayed:
                self.problems.append(f"{ws} key {key} with the same arguments was not replayed")
            elif first is not None and (result.command_id != first.command_id or
                                        versions(result)[:len(first.events)] != versions(first)):
                self.problems.append(f"{ws} key {key} replayed other facts than it first recorded")
        elif result.error and result.error.code not in PAYMENT_OUTCOMES and recorded != len(result.due_events):
            self.problems.append(f"{ws}: refused {command.name} ({result.error.code}) recorded "
                                 f"{recorded - len(result.due_events)} events")
        if key and entry is None and result.events:
            self.first_run[(ws, key)] = result

    def check_read_models(self, projections: Any, rows: list[dict[str, Any]]) -> None:
        """The journal balances and its cash is what the gateway collected; every read model
        equals the aggregate and a full rebuild."""
        try:
            check_against_ledger(self.reader, projections.engine)
        except AssertionError as e:
            self.problems.append(f"read models disagree with the ledger: {e}")
        with projections.engine.connect() as conn:
            for ws in WORKSPACES:
                collected = sum((r["amount"] for r in rows if r["workspace_id"] == ws and r["outcome"] == "succeeded"),
                                Decimal(0))
                cash = trial_balance(conn, ws).get("cash", Decimal(0))
                if cash != collected:
                    self.problems.append(f"{ws}: journal cash {cash}, the gateway collected {collected}")
        live = snapshot(projections.engine)
        projections.rebuild()
        rebuilt = snapshot(projections.engine)
        for table in live:
            if rebuilt[table] != live[table]:
                self.problems.append(f"read model {table} differs from its rebuild")


def simulate(seed: int, url: str) -> None:
    sim = Simulation(seed, url)
    try:
        problems = sim.run(STEPS)
    except Exception as error:  # an exception from the ledger is a failure of this seed
        raise AssertionError(sim.report(f"{type(error).__name__}: {error}")) from error
    finally:
        sim.close()
    assert problems == [], sim.report("\n".join(problems))


@pytest.mark.parametrize("seed", seeds(20), ids=lambda s: f"seed{s}")
def test_money_moves_exactly_once_under_faults_on_sqlite(seed: int, tmp_path: Path) -> None:
    simulate(seed, f"sqlite:///{tmp_path}/ledger.db")


@pytest.mark.postgres
@pytest.mark.parametrize("seed", seeds(3), ids=lambda s: f"seed{s}")
def test_money_moves_exactly_once_under_faults_on_postgres(seed: int, pg_url: str) -> None:
    simulate(seed, pg_url)
