"""Who may write into a ledger: a ledger records, with its first write, the kind of clock that
writes it and the payment gateway its charges go through; a process with the other kind of
either is refused before it decides anything or asks any gateway (Ledger.check_clock, called by
every writer's entry point). Test time never enters a real ledger, nor test payments a ledger
whose charges go to a real provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.domain import DomainEvent

from domain.errors import LedgerError

if TYPE_CHECKING:
    from eventsourcing.application import EventSourcedLog

    from domain.clock import Clock
    from domain.payments import PaymentGateway

CLOCK_ADVICE = {
    "test": "test time (scenarios, the demo, SUBLEDGER_TEST_CLOCK) never enters a ledger kept on the system "
            "clock: use another database",
    "system": "a ledger kept on test time takes test-clock writers only: set SUBLEDGER_TEST_CLOCK to the instant "
              "to write at, or use another database",
}


class PaymentsChosen(DomainEvent):
    """The gateway a ledger's charges go through (`test`, or the provider's name), recorded with
    its first write that has one: a process configured with another gateway is refused
    (payments_conflict), so that a job missing the provider's settings never settles real
    charges as test ones."""

    gateway: str


class WriterChecks:
    if TYPE_CHECKING:
        clock: Clock
        payments: PaymentGateway
        ledger_log: EventSourcedLog[Any]
        payments_log: EventSourcedLog[PaymentsChosen]
        _clock_recorded: bool
        _gateway_recorded: bool

    def check_clock(self) -> None:
        """Refuse to write with a test clock into a ledger kept on the system clock, or the
        other way round (clock_conflict); a new ledger records its kind with its first write.
        Every writer's entry point calls it, so it checks the payment gateway first (check_payments)."""
        self.check_payments()
        if self._clock_recorded:
            return
        created = list(self.ledger_log.get())
        if not created:
            return
        if created[0].clock != self.clock.kind:
            raise LedgerError("clock_conflict", f"this ledger is kept on the {created[0].clock} clock: a writer on "
                              f"the {self.clock.kind} clock may not write into it; {CLOCK_ADVICE[self.clock.kind]}")
        self._clock_recorded = True

    def gateway_kind(self) -> str | None:
        """The kind of gateway this process charges through; None for one that moves no money."""
        kind = getattr(self.payments, "kind", None)
        return kind if kind not in (None, "none") else None

    def check_payments(self) -> None:
        """Refuse to write with one payment gateway into a ledger whose charges go through
        another (payments_conflict): its pending charges would be asked of the wrong provider
        and new ones charged where no money moves. The first write with a gateway records it."""
        kind = self.gateway_kind()
        if self._gateway_recorded or kind is None:
            return
        chosen = self.payments_log.get_last()
        if chosen is None:
            return
        if chosen.gateway != kind:
            raise LedgerError("payments_conflict", f"this ledger's charges go through the {chosen.gateway} gateway: "
                              f"a writer with the {kind} gateway may not write into it; set SUBLEDGER_PAYMENTS="
                              f"{chosen.gateway} (and its settings) in every process, or use another database")
        self._gateway_recorded = True
