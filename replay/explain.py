"""`replay explain`: why an invoice says what it says, line by line, from the events alone.

Nothing is priced again here. Every invoice line was recorded with the arithmetic that priced
it (domain/pricing.py `Line.formula`, written by the same call that computed the amount), so
the derivation shown is that record. Around it, explain gathers what a person asks next:
the facts the same command recorded (ids, versions, actor, channel, command id), the catalog
version and content hash the decision used and its prices, and the billing rules (R1..R27,
RULES below) that the line's kind and the decision's path apply.

A declined purchase's invoice was never issued: its InvoiceIssued, and the facts it billed,
were held by the purchase's ChargeRequested and dropped when the charge was declined (R12).
It is explained from that request, and says it is void and why, in words a customer reads: the
card was declined (the decline code and the provider's message), or the charge was canceled
(code `canceled`), after the customer never completed the 3-D Secure authentication the bank
asked for (a PaymentActionRequired came first) or before it completed at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.catalog import Catalog
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.money import fmt
from domain.payments import ending
from domain.subscription import Subscription, workspace_uuid
from domain.subscription.billing import held_fact
from domain.subscription.billing_events import credit_beyond, purpose_words, workspace_of_invoice
from projections.audit_summary import Scene, summary
from projections.commands_trail import following, preceding
from projections.readmodel import event_ref
from projections.store import iso
from replay.history import Catalogs, check_chain

S = Subscription

RULES: dict[str, tuple[str, ...]] = {
    "plan_credit": ("R13",),
    "plan_credit/DowngradeApplied": ("R10", "R13"),
    "plan_credit/IntervalChanged/new_cycle": ("R13", "R14"),
    "plan_charge": ("R26",),
    "plan_charge/Subscribed/new_cycle": ("R15",),
    "plan_charge/TrialConverted/new_cycle": ("R15",),
    "plan_charge/PlanUpgraded": ("R11", "R13"),
    "plan_charge/PlanUpgraded/new_cycle": ("R11", "R16"),
    "plan_charge/IntervalChanged/new_cycle": ("R11", "R14"),
    "plan_charge/TierChanged": ("R11", "R16"),
    "plan_charge/TierChanged/new_cycle": ("R11", "R16"),
    "plan_charge/DowngradeApplied": ("R13",),
    "plan_charge/DowngradeApplied/new_cycle": ("R18",),
    "seat_charge": ("R21",),
    "seat_credit": ("R21",),
    "addon_charge": ("R22",),
    "addon_credit": ("R22",),
    "ai_credit_pack": ("R23",),
    "operations_pack": ("R18",),
    "operations_credit": ("R16", "R27"),
    "operations_overage": ("R19",),
}
"""Rule ids per line kind, refined by the fact that set the plan in the same command (and
whether it started a new cycle): the most specific key found applies."""

SOURCES: dict[str, tuple[type, ...]] = {
    "plan_": (S.PlanSet, S.PeriodRenewed),
    "seat_": (S.SeatsChanged,),
    "addon_": (S.StorageAddonChanged, S.PlanSet, S.PeriodRenewed),
    "ai_credit_pack": (S.AICreditPackBought,),
    "operations_pack": (S.OperationsBought,),
    "operations_credit": (S.OperationsConvertedToCredit,),
}
"""Which facts of the command a line of each kind was priced from (besides the invoice)."""


def rules_for(kind: str, plan_fact: Any) -> tuple[str, ...]:
    keys = [kind]
    if plan_fact is not None:
        name = type(plan_fact).__name__
        keys = [f"{kind}/{name}", kind]
        if getattr(plan_fact, "new_cycle", False):
            keys.insert(0, f"{kind}/{name}/new_cycle")
    return next((RULES[k] for k in keys if k in RULES), ())


@dataclass(frozen=True)
class Subject:
    """The invoice to explain: `invoice` is its InvoiceIssued, recorded, or held by `request` (a
    purchase's ChargeRequested) and void because `declined` (the charge's ChargeDeclined); then
    `held` are the facts the request held, the invoice among them, and `authentication` the
    PaymentActionRequired (3-D Secure) the charge waited on before it ended, if it did."""

    workspace: str
    invoice: Any
    request: S.ChargeRequested | None = None
    declined: S.ChargeDeclined | None = None
    held: tuple[Any, ...] = ()
    authentication: S.PaymentActionRequired | None = None


def held_facts(request: S.ChargeRequested) -> tuple[Any, ...]:
    """The facts a purchase's charge request held, as the events they would have been (stamped
    with the request's version: the request is the event that holds them)."""
    out = []
    for effect in request.effects:
        cls, fields = held_fact(effect)
        out.append(cls(originator_id=request.originator_id, originator_version=request.originator_version, **fields))
    return tuple(out)


def find_invoice(ledger: Ledger, invoice_id: str) -> Subject:
    """The invoice `in_<workspace>_<NNNN>`: issued, or void (held by a declined purchase), or not_found."""
    if invoice_id.startswith("in_"):  # its own workspace's events only
        named = workspace_of_invoice(invoice_id)
        searched = [named] if named is not None else []
    else:
        searched = ledger.workspaces()
    for ws in searched:
        request = authentication = None
        for event in ledger.workspace_events(ws):
            if isinstance(event, S.InvoiceIssued) and event.invoice_id == invoice_id:
                return Subject(ws, event)
            if isinstance(event, S.ChargeRequested) and holds_invoice(event, invoice_id):
                request = event
            elif isinstance(event, S.PaymentActionRequired) and event.invoice_id == invoice_id:
                authentication = event
            elif isinstance(event, S.ChargeDeclined) and event.invoice_id == invoice_id and request is not None:
                held = held_facts(request)
                invoice = next(e for e in held if isinstance(e, S.InvoiceIssued) and e.invoice_id == invoice_id)
                return Subject(ws, invoice, request, event, held, authentication)
    raise LedgerError("not_found", f"no invoice {invoice_id}")


def holds_invoice(request: S.ChargeRequested, invoice_id: str) -> bool:
    return any(e["type"] == "InvoiceIssued" and e["fields"]["invoice_id"] == invoice_id for e in request.effects)


def command_events(ledger: Ledger, workspace: str, invoice: Any) -> list[Any]:
    """Every fact the command that issued (or requested) the invoice recorded (its payment
    included); for facts recorded before command ids, its neighbours of the same instant, cause
    and actor."""
    if invoice.command_id:
        return ledger.command_events(workspace, invoice.command_id)
    return [*preceding(ledger, invoice), invoice, *following(ledger, invoice)]


def explain(ledger: Ledger, invoice_id: str, line: int | None = None) -> dict[str, Any]:
    """The explanation document (the json format; text and markdown render it)."""
    subject = find_invoice(ledger, invoice_id)
    ws, invoice = subject.workspace, subject.invoice
    check_chain(ledger, ws)
    events = command_events(ledger, ws, subject.request or invoice)
    decided = [*subject.held, subject.declined] if subject.declined else events
    catalog = Catalogs(ledger).of(invoice)
    cur = invoice.currency
    at = next((n for n, e in enumerate(decided) if isinstance(e, S.InvoiceIssued) and e.invoice_id == invoice_id),
              len(decided))
    plan_fact = next((e for e in reversed(decided[:at]) if isinstance(e, (S.PlanSet, S.PeriodRenewed))), None)
    if line is not None and not 1 <= line <= len(invoice.lines):
        raise LedgerError("invalid_request", f"--line: {invoice_id} has lines 1 to {len(invoice.lines)}")
    lines = []
    for n, item in enumerate(invoice.lines, 1):
        if line is not None and n != line:
            continue
        rules = rules_for(item["kind"], plan_fact)
        sources = next((types for prefix, types in SOURCES.items() if item["kind"].startswith(prefix)), ())
        produced = [e for e in decided if isinstance(e, sources)] + [invoice, *filter(None, [subject.declined])]
        sign = "credit, " if item["amount"] < 0 else ""
        lines.append({
            "n": n, "kind": item["kind"], "description": item["description"], "amount": fmt(item["amount"], cur),
            "quantity": item["quantity"], "period": {"start": iso(item["period_start"]), "end": iso(item["period_end"])},
            "formula": item["formula"], "rules": list(rules),
            "events": list(dict.fromkeys(event_ref(ws, e.originator_version) for e in produced)),
            "derivation": f"{item['description']} = {item['formula']} ({sign}{', '.join(rules) or 'R26'})",
        })
    first = events[0]
    return {
        "invoice_id": invoice.invoice_id, "workspace": ws, "purpose": invoice.purpose,
        "issued_at": iso(invoice.timestamp), "currency": cur, "void": void(subject),
        "command": {"id": invoice.command_id, "name": invoice.cause, "at": iso(first.timestamp),
                    "actor": {"id": invoice.actor_id, "role": invoice.actor_role}, "channel": invoice.channel,
                    "reason": invoice.reason, "idempotency_key": invoice.idempotency_key},
        "catalog": {"version": invoice.catalog_version, "content_hash": invoice.catalog_hash or catalog.content_hash,
                    "hash_recorded": invoice.catalog_hash is not None,
                    "prices": prices_used(catalog, decided, ledger, ws)},
        "events": [event_row(ledger, ws, e, catalog) for e in events],
        "lines": lines,
        "totals": totals(invoice, decided, void=ended(subject.declined) if subject.declined else None),
        "facts": facts(decided, invoice, cur),
        "collection": collection(ledger.workspace_events(ws), invoice, subject.declined),
    }


def ended(declined: S.ChargeDeclined) -> str:
    """How the charge that voided the invoice ended: `declined` by the card, or `canceled`."""
    return ending(declined.decline_code, "declined")


def void(subject: Subject) -> dict[str, Any] | None:
    """Why a declined purchase's invoice is void (R12), in plain words; None for an issued invoice.
    A canceled charge is not called declined: the card was never refused. After a 3-D Secure
    request, the customer never completed the authentication, and the charge was canceled."""
    declined = subject.declined
    if declined is None:
        return None
    cur = subject.invoice.currency
    purpose = subject.invoice.purpose
    charge = f"the charge of {fmt(declined.amount, cur)} for this {purpose_words(purpose)}"
    at = iso(declined.timestamp)
    never_issued = "the invoice was never issued: nothing was bought and nothing is owed (R12)"
    if ended(declined) == "declined":
        reason = f"{charge} was declined on {at} ({declined.decline_code}: {declined.message}), so {never_issued}"
    elif subject.authentication is not None:
        reason = (f"the customer never completed the card authentication (3-D Secure) their bank asked for on "
                  f"{iso(subject.authentication.timestamp)}, so {charge} was canceled on {at} and {never_issued}")
    else:
        reason = f"{charge} was canceled on {at} before it completed ({declined.message}), so {never_issued}"
    return {"declined_by": event_ref(subject.workspace, declined.originator_version),
            "requested_by": event_ref(subject.workspace, subject.request.originator_version),
            "at": at, "outcome": ended(declined), "decline_code": declined.decline_code, "message": declined.message,
            "reason": f"void: {reason}"}


def event_row(ledger: Ledger, ws: str, event: Any, catalog: Catalog) -> dict[str, Any]:
    after = ledger.repository.get(workspace_uuid(ws), version=event.originator_version)
    before = ledger.repository.get(workspace_uuid(ws), version=event.originator_version - 1) \
        if event.originator_version > 1 else None
    plan = before.plan_of(catalog) if before is not None else None
    return {"id": event_ref(ws, event.originator_version), "version": event.originator_version,
            "type": type(event).__name__, "at": iso(event.timestamp), "actor": event.actor_id,
            "role": event.actor_role, "channel": event.channel, "cause": event.cause, "command_id": event.command_id,
            "summary": summary(event, Scene(after, catalog, plan.name if plan else None, ledger))}


def prices_used(catalog: Catalog, events: list[Any], ledger: Ledger, ws: str) -> list[dict[str, str]]:
    """The catalog prices behind the command's lines: the plan it moved from and the plan it
    moved to (the plan renewed, for a renewal) at the interval and tier concerned, the add-on
    and the AI credit pack."""
    out: list[dict[str, str]] = []
    cur = catalog.currency

    def state(version: int) -> Subscription | None:
        return ledger.repository.get(workspace_uuid(ws), version=version) if version > 0 else None

    for e in events:
        wanted: list[Any] = []
        if isinstance(e, S.PlanSet):
            wanted = [state(e.originator_version - 1), e]
        elif isinstance(e, (S.PeriodRenewed, S.SeatsChanged)):
            wanted = [state(e.originator_version)]
        elif isinstance(e, S.AICreditPackBought):
            out.append({"item": f"AI credit pack {e.pack} ({e.credits:,} credits)", "price": fmt(e.price, cur)})
        elif isinstance(e, S.StorageAddonChanged) and e.addon and catalog.addon(e.addon):
            addon = catalog.addon(e.addon)
            out += [{"item": f"{addon.name} per {k}", "price": fmt(v, cur)} for k, v in addon.prices.items()]
        for found in wanted:
            plan = catalog.plan(found.plan) if found is not None and found.plan else None
            if plan is None:
                continue
            seat = " per seat" if plan.per_seat else ""
            out += [{"item": f"{plan.name} per {k}{seat}", "price": fmt(v, cur)}
                    for k, v in plan.prices.items() if k == found.interval]
            out += [{"item": f"{plan.name} {t.operations:,} operations per {t.interval}", "price": fmt(t.price, cur)}
                    for t in plan.tiers if (t.operations, t.interval) == (found.tier, found.interval)]
    return list({(p["item"], p["price"]): p for p in out}.values())


def totals(invoice: S.InvoiceIssued, events: list[Any], void: str | None = None) -> dict[str, Any]:
    """The invoice's arithmetic; `void`: how the charge of a void invoice ended (declined, canceled)."""
    cur = invoice.currency
    issued, forfeited = credit_beyond(invoice, events)
    amounts = " + ".join(fmt(line["amount"], cur) for line in invoice.lines) or "0"
    steps = [f"subtotal {amounts} = {fmt(invoice.subtotal, cur)}",
             f"credit applied {fmt(invoice.credit_applied, cur)} (R27: never above the bill)",
             f"due {fmt(invoice.amount_due, cur)}"]
    if issued:
        steps.append(f"billing credit issued {fmt(issued, cur)}: kept as account balance, never cash (R10, R27)")
    if forfeited:
        steps.append(f"credit forfeited {fmt(forfeited, cur)}: the catalog drops a credit beyond its bill (R27)")
    if void:
        steps.append(f"owed {fmt(Decimal(0), cur)}: void, its charge was {void} (R12)")
    return {"subtotal": fmt(invoice.subtotal, cur), "credit_applied": fmt(invoice.credit_applied, cur),
            "amount_due": fmt(invoice.amount_due, cur), "credit_issued": fmt(issued, cur),
            "credit_forfeited": fmt(forfeited, cur), "derivation": steps}


def facts(events: list[Any], invoice: S.InvoiceIssued, cur: str) -> list[str]:
    """What else the command did that a person asks about, with its own arithmetic."""
    out = []
    plan_fact = next((e for e in events if isinstance(e, S.PlanSet)), None)
    for e in events:
        if isinstance(e, S.OperationsConvertedToCredit):
            out.append(f"{e.operations:,} unused operations became a credit of {fmt(e.amount, cur)}: {e.formula} (R16)")
        elif isinstance(e, S.OperationsCarriedOver):
            tier = plan_fact.ops_allotment if plan_fact is not None and plan_fact.ops_allotment else 0
            out.append(f"operations: {e.operations:,} carried over + {tier:,} of the new tier = "
                       f"{e.operations + tier:,} operations in the first cycle; the carried ones last until "
                       f"{iso(e.until)} (R18)")
    return out


def collection(history: list[Any], invoice: S.InvoiceIssued, declined: S.ChargeDeclined | None) -> dict[str, Any]:
    """Where the invoice stands now and every attempt to collect it, whichever command or
    scheduler round made it (a retry, pay-invoice, an abandoned authentication): support must
    never read a failed charge on an invoice paid since."""
    cur, attempts, status = invoice.currency, [], "void" if declined else "paid" if invoice.amount_due <= 0 else "open"
    for e in history:
        if getattr(e, "invoice_id", None) != invoice.invoice_id:
            continue
        if isinstance(e, S.PaymentSucceeded):
            charge = f" (charge {e.charge_id})" if e.charge_id else ""
            attempts.append(f"paid {fmt(e.amount, cur)} on {iso(e.timestamp)} via {e.channel}{charge}")
            status = "paid"
        elif isinstance(e, (S.PaymentFailed, S.ChargeDeclined)):
            attempts.append(f"payment of {fmt(e.amount, cur)} {ending(e.decline_code, 'failed')} on "
                            f"{iso(e.timestamp)}: {e.message} ({e.decline_code})")
        elif isinstance(e, S.PaymentActionRequired):
            attempts.append(f"the bank asked the customer to authenticate (3-D Secure) on {iso(e.timestamp)}")
    return {"status": status, "attempts": attempts}
