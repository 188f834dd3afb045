"""Settling payments: the Ledger's half that moves money once a pending charge is recorded
(docs/payments.md). The aggregate records the pending charge; this asks the gateway by the
charge's key and records the outcome, so asking again (a retry, a second process, a recovery
after a crash) never charges twice.

A mixin of the Ledger application, kept apart so that ledger.py holds loading, deciding and
saving; it relies on the Ledger's `get`, `_save`, `_context`, `clock` and `payments`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError

from domain.commands import SYSTEM
from domain.errors import LedgerError
from domain.payments import ChargeRequest, ChargeResult, GatewayUnavailable, IdempotencyMismatch
from domain.subscription import Subscription

if TYPE_CHECKING:
    from datetime import datetime

    from domain.clock import Clock
    from domain.payments import PaymentGateway
    from domain.subscription import Context

MAX_ATTEMPTS = 5
log = logging.getLogger("subledger.payments")


class Settlement:
    """Ask the gateway for a pending charge's outcome and record it; abandon or report one."""

    if TYPE_CHECKING:
        clock: Clock
        payments: PaymentGateway

        def get(self, workspace_id: str) -> Subscription | None: ...
        def _save(self, sub: Subscription, events: list[Any]) -> None: ...
        def _context(self, sub: Subscription, actor: Any, channel: str, cause: str, reason: str | None,
                     key: str | None, args_hash: str | None, command_id: str | None) -> Context: ...
        def _not_before(self, sub: Subscription, at: datetime) -> datetime: ...
        def check_clock(self) -> None: ...

    def abandon_payment(self, workspace_id: str, invoice_id: str | None = None) -> list[Subscription.Event]:
        """Give up a charge awaiting the customer (3-D Secure): the provider cancels it, or says
        it completed first; either way the outcome is recorded. A provider that does not answer
        is a refusal (`payment_pending`): the charge stays pending."""
        self.check_clock()  # and the gateway: the right provider is asked
        for _ in range(MAX_ATTEMPTS):
            sub = self.get(workspace_id)
            if sub is None:
                raise LedgerError("not_found", f"{workspace_id}: no such workspace")
            self._not_before(sub, self.clock.now())  # before the gateway is asked to cancel
            chosen = [i for i in sub.pending_charges if invoice_id in (None, i)]
            if not chosen:
                raise LedgerError("no_pending_payment", f"no pending payment {invoice_id} on {workspace_id}" if invoice_id
                                  else f"no pending payment on {workspace_id}")
            recorded = []
            try:
                for found in chosen:
                    result = self._cancel(sub.pending_charges[found])
                    recorded += self._record_outcome(sub, found, result)
            except IntegrityError:
                continue
            except GatewayUnavailable:
                raise LedgerError("payment_pending", f"the payment provider did not answer: the payment on "
                                  f"{workspace_id} is still pending, abandon it again later") from None
            return recorded
        raise LedgerError("concurrency_conflict", f"could not record the payment outcome on {workspace_id}")

    def _settle_command(self, sub: Subscription, command_id: str) -> tuple[Subscription, list[Any]] | None:
        """Move the money a command just recorded a pending charge for, and record the outcome:
        the aggregate after it and the facts recorded, or None when another writer interleaved."""
        try:
            return sub, self._settle(sub, command_id=command_id)
        except IntegrityError:
            pass
        for _ in range(MAX_ATTEMPTS):
            reloaded = self.get(sub.workspace_id)
            assert reloaded is not None
            try:
                self._settle(reloaded, command_id=command_id)
                return None
            except IntegrityError:
                continue
        return None

    def _settle(self, sub: Subscription, *, command_id: str | None = None, blocking_due: bool = False,
                invoice_ids: set[str] | None = None, channel: str = "scheduler") -> list[Any]:
        """Ask the gateway, by each pending charge's key, for its outcome and record it. The key
        makes asking again safe: a second process, a retry or a recovery after a crash gets the
        same outcome and never a second charge. A charge awaiting the customer is abandoned
        (`blocking_due`) when an item fell due behind it, so renewals never wait on it."""
        recorded: list[Any] = []
        for invoice_id, pending in list(sub.pending_charges.items()):
            if command_id and pending["requested_by"]["command_id"] != command_id:
                continue
            if invoice_ids is not None and invoice_id not in invoice_ids:
                continue
            try:
                request = ChargeRequest(
                    idempotency_key=pending["charge_key"], workspace_id=sub.workspace_id,
                    payment_method=pending["payment_method"], amount=pending["amount"],
                    currency=pending["currency"], description=f"{pending['purpose']} {invoice_id}",
                    requested_by=pending["requested_by"].get("command_id"))
                recorded += self._submit(sub, invoice_id, request)
                result = self._charge(request, sub.pending_charges[invoice_id])
                due_at = sub.next_due_at()
                if not result.final and blocking_due and due_at is not None and due_at <= self.clock.now():
                    result = self._cancel(pending)
            except GatewayUnavailable:
                return recorded  # the outcome is unknown: it stays pending, and is asked again later
            except IdempotencyMismatch as e:  # its key was used for something else: never this charge's money
                log.error("%s: charge %s left pending for a person to look at: %s", sub.workspace_id,
                          pending["charge_key"], e)
                continue
            if not result.final and pending["action_required"]:
                continue
            recorded += self._record_outcome(sub, invoice_id, result, channel)
        return recorded

    def _submit(self, sub: Subscription, invoice_id: str, request: ChargeRequest) -> list[Any]:
        """A two-step gateway (domain/payments.py, SubmittingGateway) creates its charge object
        first; its reference is saved before the charge is confirmed, so a retry or a recovery
        confirms or reads that one and never creates a second."""
        submit = getattr(self.payments, "submit", None)
        if submit is None or sub.pending_charges[invoice_id].get("provider_reference"):
            return []
        reference = submit(request)
        if reference is None:
            return []
        sub.record_submission(invoice_id, reference, self._context(sub, SYSTEM, "scheduler", "payment", None, None,
                                                                   None, None))
        events = list(sub.pending_events)
        self._save(sub, events)
        return events

    def _charge(self, request: ChargeRequest, pending: Any) -> ChargeResult:
        if hasattr(self.payments, "submit"):
            return self.payments.charge(request, pending.get("provider_reference"))  # type: ignore[call-arg]
        return self.payments.charge(request)

    def _cancel(self, pending: Any) -> ChargeResult:
        if hasattr(self.payments, "submit"):
            return self.payments.cancel(pending["charge_key"], pending.get("provider_reference"))  # type: ignore[call-arg]
        return self.payments.cancel(pending["charge_key"])

    def settle_reported(self, workspace_id: str, reference: str) -> list[Subscription.Event]:
        """The provider reports news of the charge object `reference` (a webhook): ask the gateway
        for its outcome and record it on channel `billing_provider`. A reference no pending charge
        was submitted as (unknown, or its outcome already recorded) records nothing."""
        self.check_clock()  # and the gateway: the ledger's own provider is asked
        for _ in range(MAX_ATTEMPTS):
            sub = self.get(workspace_id)
            if sub is None:
                return []
            found = {i for i, p in sub.pending_charges.items() if p.get("provider_reference") == reference}
            if not found:
                return []
            try:
                return self._settle(sub, invoice_ids=found, channel="billing_provider")
            except IntegrityError:
                continue
        raise LedgerError("concurrency_conflict", f"could not record the payment outcome on {workspace_id}")

    def _record_outcome(self, sub: Subscription, invoice_id: str, result: ChargeResult,
                        channel: str = "scheduler") -> list[Any]:
        sub.settle(invoice_id, result, self._context(sub, SYSTEM, channel, "payment", None, None, None, None))
        events = list(sub.pending_events)
        self._save(sub, events)
        return events
