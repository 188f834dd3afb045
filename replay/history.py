"""A workspace's recorded history read back as runs: the facts one command, one scheduler
round or one payment settlement recorded together, in the order they were recorded.

Replay never has the commands themselves, only their facts. Every fact carries its command
id, so a run is a stretch of consecutive facts with one command id; facts recorded before
ids existed are grouped as projections/commands_trail.py groups them (same instant, cause,
actor and idempotency key). A command's later runs (the outcome of a charge that waited for
3-D Secure or for a provider) are settlements.

Also here: the catalog each fact was decided with (by the version and content hash it
records, from the ledger's published catalogs) and each charge's recorded outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.catalog import Catalog
from domain.commands import COMMANDS, Actor, check_workspace_id
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.payments import ChargeResult
from domain.subscription import Subscription, workspace_uuid
from domain.subscription.scheduler import DUE
from projections.commands_trail import same_command
from projections.runner import broken_link

OUTCOMES = (Subscription.PaymentSucceeded, Subscription.PaymentFailed, Subscription.ChargeDeclined)
"""Facts that end a charge (UpgradePaymentFailed is a ChargeDeclined)."""


@dataclass
class Run:
    """Facts recorded together. `kind`: register, command, due (a scheduler round),
    settlement (a command's charge outcome recorded later), or other."""

    index: int
    events: list[Any]
    kind: str = "other"

    @property
    def first(self) -> Any:
        return self.events[0]

    @property
    def last(self) -> Any:
        return self.events[-1]

    @property
    def at(self) -> datetime:
        return self.first.timestamp

    @property
    def cause(self) -> str:
        return self.first.cause

    @property
    def command_id(self) -> str | None:
        return self.first.command_id

    @property
    def actor(self) -> Actor:
        return Actor(id=self.first.actor_id, role=self.first.actor_role)

    @property
    def versions(self) -> tuple[int, int]:
        return self.first.originator_version, self.last.originator_version

    def invoices(self) -> list[Subscription.InvoiceIssued]:
        return [e for e in self.events if isinstance(e, Subscription.InvoiceIssued)]


def runs(events: Iterable[Any]) -> list[Run]:
    """The facts of one workspace, in version order, cut into runs and classified."""
    out: list[Run] = []
    seen_commands: set[str] = set()
    for event in events:
        if out and same_command(out[-1].last, event) is True:
            out[-1].events.append(event)
            continue
        out.append(Run(len(out), [event]))
    for run in out:
        later = run.command_id is not None and run.command_id in seen_commands
        if run.command_id is not None:
            seen_commands.add(run.command_id)
        if isinstance(run.first, Subscription.WorkspaceRegistered):
            run.kind = "register"
        elif later:
            run.kind = "settlement"
        elif run.cause in COMMANDS:
            run.kind = "command"
        elif run.cause in DUE:
            run.kind = "due"
        elif run.cause == "payment":
            run.kind = "settlement"
    return out


def first_runs(history: list[Run]) -> dict[str, int]:
    """Each command id's first run: where the command was decided."""
    first: dict[str, int] = {}
    for run in history:
        if run.command_id is not None:
            first.setdefault(run.command_id, run.index)
    return first


def deciding_run(invoice: Any, produced_in: int, first: dict[str, int]) -> int:
    """The run that decided an invoice: its command's first run (an invoice a charge held is
    recorded later, when the charge succeeds), else the run that recorded it."""
    return first.get(invoice.command_id, produced_in) if invoice.command_id else produced_in


def deciding_runs(history: list[Run]) -> dict[int, list[Subscription.InvoiceIssued]]:
    """Recorded invoices by the run that decided them."""
    first = first_runs(history)
    out: dict[int, list[Subscription.InvoiceIssued]] = {}
    for run in history:
        for invoice in run.invoices():
            out.setdefault(deciding_run(invoice, run.index, first), []).append(invoice)
    return out


# ------------------------------------------------------------------ catalogs


@dataclass
class Catalogs:
    """The catalogs a ledger decided with, by `id@version`: the documents it published (what
    was recorded), else the ones loaded now. A fact whose recorded content hash differs from
    the catalog found is refused (catalog_mismatch): replaying it would price with another."""

    ledger: Ledger
    found: dict[str, Catalog | None] = field(default_factory=dict)

    def of(self, event: Any) -> Catalog:
        if event.catalog_version not in self.found:
            self.found[event.catalog_version] = self.ledger.catalog_recorded(event.catalog_version)
        catalog = self.found[event.catalog_version]
        if catalog is None:
            raise LedgerError("catalog_mismatch", f"catalog {event.catalog_version} is neither published in the "
                              "ledger nor loaded")
        recorded = getattr(event, "catalog_hash", None)
        if recorded is not None and recorded != catalog.content_hash:
            raise LedgerError("catalog_mismatch", f"the facts record catalog {event.catalog_version} with content "
                              f"{recorded[:19]}..., the ledger holds {catalog.content_hash[:19]}...")
        return catalog


# ------------------------------------------------------------------ charge outcomes


@dataclass(frozen=True)
class Outcome:
    """What the provider answered for one charge attempt, and in which run it was recorded."""

    run: int
    result: ChargeResult


def result_of(event: Any) -> ChargeResult:
    if isinstance(event, Subscription.PaymentSucceeded):
        return ChargeResult("succeeded", charge_id=event.charge_id)
    if isinstance(event, Subscription.PaymentActionRequired):
        return ChargeResult("action_required", message=event.message)
    code = event.decline_code
    return ChargeResult("canceled" if code == "canceled" else "declined", decline_code=code, message=event.message)


ChargeKey = tuple[datetime, str, int, int]
"""A charge by what it is, not by its invoice id: requested at, purpose, attempt, and the n-th
request of those three. Under another pricing an invoice more or fewer shifts every later
invoice id, and a charge keyed by its id took another invoice's outcome."""


@dataclass
class Outcomes:
    """Recorded outcomes by charge (ChargeKey): how replay settles the charges it re-decides.
    Facts from before charges had requests (no ChargeRequested, a decline without an invoice
    id) are found by their run instead."""

    requested: set[ChargeKey] = field(default_factory=set)
    final: dict[ChargeKey, Outcome] = field(default_factory=dict)
    waiting: dict[ChargeKey, Outcome] = field(default_factory=dict)
    in_run: dict[int, list[Any]] = field(default_factory=dict)
    replayed: dict[tuple[str, int], ChargeKey] = field(default_factory=dict)
    """Replay's own charges (invoice id, attempt) by the key each was given when first asked."""
    replay_counted: dict[tuple[datetime, str, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, history: list[Run]) -> Outcomes:
        out = cls()
        request_of: dict[str, ChargeKey] = {}
        counted: dict[tuple[datetime, str, int], int] = {}
        for run in history:
            for event in run.events:
                if isinstance(event, Subscription.ChargeRequested):
                    request_of[event.invoice_id] = key = nth(counted, event.timestamp, event.purpose, event.attempt)
                    out.requested.add(key)
                elif isinstance(event, (*OUTCOMES, Subscription.PaymentActionRequired)):
                    out.in_run.setdefault(run.index, []).append(event)
                    if not event.invoice_id or event.invoice_id not in request_of:
                        continue
                    key = request_of[event.invoice_id]
                    target = out.waiting if isinstance(event, Subscription.PaymentActionRequired) else out.final
                    target.setdefault(key, Outcome(run.index, result_of(event)))
        return out

    def answer(self, invoice_id: str, pending: dict[str, Any], run: int) -> ChargeResult | None:
        """The outcome to record now (at `run`) for a charge replay requested, or None to leave
        it pending. A charge the history never requested (it cost nothing when recorded) succeeds."""
        mine = (invoice_id, pending["attempt"])
        if mine not in self.replayed:
            self.replayed[mine] = nth(self.replay_counted, pending["requested_at"], pending["purpose"],
                                      pending["attempt"])
        key = self.replayed[mine]
        final = self.final.get(key)
        if final is not None:
            return final.result if final.run <= run else self._waiting(key, run)
        legacy = [e for e in self.in_run.get(run, []) if e.invoice_id in (invoice_id, None)
                  and not isinstance(e, Subscription.PaymentActionRequired)]
        if legacy:
            return result_of(legacy[0])
        if key in self.requested:
            return self._waiting(key, run)
        return ChargeResult("succeeded", charge_id="ch_replay")

    def _waiting(self, key: ChargeKey, run: int) -> ChargeResult | None:
        waiting = self.waiting.get(key)
        return waiting.result if waiting is not None and waiting.run <= run else None


def nth(counted: dict[tuple[datetime, str, int], int], at: datetime, purpose: str, attempt: int) -> ChargeKey:
    """The key of the next request of these three, counting it."""
    n = counted.get((at, purpose, attempt), 0)
    counted[(at, purpose, attempt)] = n + 1
    return at, purpose, attempt, n


def check_known(ledger: Ledger, workspace: str) -> None:
    """not_found unless the workspace index lists it or the store holds an event of it: a typo
    must not pass for a clean check, and a listed workspace whose events were deleted is checked
    (and found missing), not called unknown."""
    check_workspace_id(workspace)
    if workspace in ledger.workspaces() or ledger.recorder.select_events(workspace_uuid(workspace), limit=1):
        return
    raise LedgerError("not_found", f"{workspace}: no such workspace")


def check_chain(ledger: Ledger, workspace: str) -> None:
    """event_chain_broken when the workspace's stored events fail their hash chain (a store that
    keeps one: adapters/chained_store.py): an explanation, a past state or a re-pricing read
    from altered events would be pasted into a reply as if it were the record."""
    bad = broken_link(ledger, workspace_uuid(workspace))
    if bad is None:
        return
    raise LedgerError("event_chain_broken", f"the stored events of {workspace} fail their hash chain at version "
                      f"{bad.version} ({bad.problem}): what replay would show comes from altered events. Run "
                      "`subledger audit verify`")
