""""Money moves exactly once", checked against the gateway's own rows: shared by the
concurrency test (real processes), the seeded simulation and the HTTP test on localstripe
(whose PaymentIntents `stripe_rows` turns into such rows).

Each check returns the problems it found as sentences, so that a failing run can print all
of them (with its seed) at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from domain.subscription import Subscription
from domain.subscription.events import KEY_RETENTION

OUTCOMES = (Subscription.PaymentSucceeded, Subscription.PaymentFailed, Subscription.ChargeDeclined)


def invoice_of(charge_key: str) -> tuple[str, str]:
    """(workspace, invoice id) of a key `workspace:invoice_id:attempt`."""
    workspace, invoice_id, _attempt = charge_key.rsplit(":", 2)
    return workspace, invoice_id


def recorded_charges(ledger: Any, workspace_id: str) -> dict[str, dict[str, Any]]:
    """Per charge key the ledger recorded: its request and the outcomes recorded for it."""
    charges: dict[str, dict[str, Any]] = {}
    current: dict[str, str] = {}  # invoice id -> key of its latest requested attempt
    for event in ledger.workspace_events(workspace_id):
        if isinstance(event, Subscription.ChargeRequested):
            charges[event.charge_key] = {"request": event, "outcomes": []}
            current[event.invoice_id] = event.charge_key
        elif isinstance(event, OUTCOMES) and event.invoice_id in current:
            charges[current[event.invoice_id]]["outcomes"].append(event)
    return charges


def money_problems(ledger: Any, rows: list[dict[str, Any]], *, settled: bool = True) -> list[str]:
    """What breaks "money moves exactly once" between the ledger's facts and the gateway's rows
    (`TestPaymentGateway.charges()`). `settled`: no charge may be pending at all; otherwise only
    one awaiting the customer's 3-D Secure may."""
    problems: list[str] = []
    by_key = {row["idempotency_key"]: row for row in rows}
    succeeded_per_invoice = Counter(invoice_of(r["idempotency_key"]) for r in rows if r["outcome"] == "succeeded")
    problems += [f"invoice {ws}/{inv} charged {n} times" for (ws, inv), n in succeeded_per_invoice.items() if n > 1]
    workspaces = ledger.workspaces()
    for ws in workspaces:
        events = ledger.workspace_events(ws)
        charges = recorded_charges(ledger, ws)
        gateway_totals: dict[str, Decimal] = defaultdict(Decimal)  # per currency: 19 USD is not 19 EUR
        for r in rows:
            if r["workspace_id"] == ws and r["outcome"] == "succeeded":
                gateway_totals[r.get("currency") or "?"] += r["amount"]
        paid = [e for e in events if isinstance(e, Subscription.PaymentSucceeded)]
        recorded_totals: dict[str, Decimal] = defaultdict(Decimal)
        for charge in charges.values():
            for o in charge["outcomes"]:
                if isinstance(o, Subscription.PaymentSucceeded):
                    recorded_totals[charge["request"].currency] += o.amount
        if dict(gateway_totals) != dict(recorded_totals):
            problems.append(f"{ws}: the gateway collected {dict(gateway_totals)}, the ledger recorded "
                            f"{dict(recorded_totals)}")
        paid_invoices = Counter(e.invoice_id for e in paid)
        problems += [f"{ws}: {inv} recorded paid {n} times" for inv, n in paid_invoices.items() if n > 1]
        for key, charge in charges.items():
            outcomes, row = charge["outcomes"], by_key.get(key)
            if len(outcomes) > 1:
                problems.append(f"{ws}: {key} has {len(outcomes)} outcomes recorded: {[type(o).__name__ for o in outcomes]}")
            success = [o for o in outcomes if isinstance(o, Subscription.PaymentSucceeded)]
            collected = row is not None and row["outcome"] == "succeeded"
            if collected != bool(success):
                problems.append(f"{ws}: {key} is {row and row['outcome']} at the gateway, recorded as "
                                f"{[type(o).__name__ for o in outcomes]}")
            elif success and (success[0].charge_id != row["charge_id"] or success[0].amount != row["amount"]):
                problems.append(f"{ws}: {key} recorded {success[0].amount} {success[0].charge_id}, "
                                f"the gateway has {row['amount']} {row['charge_id']}")
        problems += [f"{ws}: the gateway holds {key} ({r['outcome']}) that the ledger never requested"
                     for key, r in by_key.items() if r["workspace_id"] == ws and key not in charges]
        issued = Counter(e.invoice_id for e in events if isinstance(e, Subscription.InvoiceIssued))
        problems += [f"{ws}: invoice id {inv} issued {n} times" for inv, n in issued.items() if n > 1]
        purchases = Counter(c["request"].invoice_id for c in charges.values() if c["request"].effects)
        problems += [f"{ws}: invoice id {inv} requested for {n} purchases" for inv, n in purchases.items() if n > 1]
        void = {e.invoice_id for e in events if isinstance(e, Subscription.ChargeDeclined) and e.invoice_id}
        problems += [f"{ws}: void invoice id {inv} reused" for inv in void & (set(issued) | _later_requests(charges))]
        sub = ledger.get(ws)
        for pending in (sub.pending_charges.values() if sub else []):
            row = by_key.get(pending["charge_key"])
            awaiting_customer = pending["action_required"] and row is not None and row["outcome"] == "action_required"
            if settled or not awaiting_customer:
                problems.append(f"{ws}: {pending['charge_key']} still pending (gateway: {row and row['outcome']})")
    return problems


STRIPE_OUTCOMES = {"succeeded": "succeeded", "requires_action": "action_required", "canceled": "canceled"}


def stripe_rows(intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PaymentIntents (StripeGateway.payment_intents) as the test gateway's rows, for
    money_problems. An unconfirmed PaymentIntent of a key that has another one moved no money
    (an orphan of a crash or a race, docs/payments.md) and is left out, so each key's row is
    its succeeded PaymentIntent if any; every succeeded one is kept, so a double charge shows."""
    from adapters.stripe_gateway import charge_id_of, from_minor_units

    def row(pi: dict[str, Any]) -> dict[str, Any]:
        declined = pi["status"] == "requires_payment_method" and pi.get("last_payment_error")
        return {"idempotency_key": pi["metadata"]["charge_key"], "workspace_id": pi["metadata"]["workspace"],
                "amount": from_minor_units(pi["amount"], pi["currency"]), "currency": pi["currency"].upper(),
                "charge_id": charge_id_of(pi),
                "outcome": "declined" if declined else STRIPE_OUTCOMES.get(pi["status"], pi["status"])}

    rows = [row(pi) for pi in intents]
    keys = Counter(r["idempotency_key"] for r in rows)
    kept = [r for r in rows if r["outcome"] != "requires_confirmation" or keys[r["idempotency_key"]] == 1]
    return sorted(kept, key=lambda r: r["outcome"] == "succeeded")


def _later_requests(charges: dict[str, dict[str, Any]]) -> set[str]:
    """Invoice ids requested again after a declined purchase under them."""
    seen: dict[str, int] = defaultdict(int)
    for charge in charges.values():
        seen[charge["request"].invoice_id] += 1
    return {inv for inv, n in seen.items() if n > 1}


def key_problems(ledger: Any) -> list[str]:
    """One idempotency key, one command while the workspace remembers the key: a fact recorded
    under a key by another command than the key's earlier ones comes KEY_RETENTION after the
    latest of them began."""
    problems = []
    for ws in ledger.workspaces():
        began: dict[str, dict[str | None, Any]] = defaultdict(dict)
        for event in ledger.workspace_events(ws):
            key = getattr(event, "idempotency_key", None)
            if not key or event.command_id in began[key]:
                continue
            latest = max(began[key].values(), default=None)
            if latest is not None and event.timestamp <= latest + KEY_RETENTION:
                problems.append(f"{ws}: key {key} recorded {len(began[key]) + 1} commands within {KEY_RETENTION.days} days")
            began[key][event.command_id] = event.timestamp
    return problems


def pending_count(ledger: Any) -> int:
    return sum(len(sub.pending_charges) for ws in ledger.workspaces() if (sub := ledger.get(ws)))
