"""The Stripe payment gateway (`SUBLEDGER_PAYMENTS=stripe`): PaymentIntents, in two steps.

`submit` creates the PaymentIntent unconfirmed (no money moves) and the ledger records its id
(ChargeSubmitted) before `charge` confirms it; a retry or `payments resolve` reads or confirms
that PaymentIntent by id and never creates a second one. The idempotency key is still sent, for
Stripe, but localstripe ignores it, so nothing relies on it. A process that dies between
creating and recording leaves an unconfirmed PaymentIntent that moves no money.

One Stripe customer per workspace, and one attached PaymentMethod per (workspace, ledger token),
both remembered in side tables of the ledger's database. docs/payments.md ("Stripe") has the
token to card mapping and the quirks of localstripe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import stripe
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError

from adapters.side_tables import SideTables, insert_if_absent
from domain.payments import ChargeRequest, ChargeResult, GatewayUnavailable, IdempotencyMismatch

T = TypeVar("T")

CARDS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_chargeDeclined": "4000000000000341",  # attaches, then every charge is declined
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",  # declined when attached
    "pm_card_authenticationRequired": "4000002760003184",  # 3-D Secure: requires_action
}
"""The ledger's test tokens as Stripe test card numbers; any other `pm_card_*` token is a Visa
that succeeds (as in the test gateway), any other token a real Stripe PaymentMethod id."""
ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
                          "XAF", "XOF", "XPF"})
CANCELABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"})

metadata = MetaData()
customers_table = Table(
    "stripe_customers", metadata,
    Column("workspace_id", String(255), primary_key=True),
    Column("customer_id", String(255), nullable=False),
)
methods_table = Table(
    "stripe_payment_methods", metadata,
    Column("workspace_id", String(255), primary_key=True),
    Column("token", String(255), primary_key=True),
    Column("payment_method_id", String(255), nullable=False),
)


THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
"""Sent in thousandths, and only in multiples of ten: Stripe's payment partners take no last
digit (5.124 KWD cannot be charged; 5.120 can)."""


class NotChargeable(ValueError):
    """An amount the currency's minor units hold that Stripe does not charge (19.125 KWD)."""


def exponent(currency: str) -> int:
    """How many decimal places Stripe's integer amounts of `currency` stand for."""
    code = currency.upper()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def minor_units(amount: Decimal, currency: str) -> int:
    """Stripe's integer amount: cents, units of a zero-decimal currency, thousandths of a
    three-decimal one; never rounded."""
    units = amount.scaleb(exponent(currency)) if amount.is_finite() else amount
    if not amount.is_finite() or amount <= 0 or units != units.to_integral_value():
        raise ValueError(f"{amount} {currency} is not a positive whole number of the currency's minor units")
    if currency.upper() in THREE_DECIMAL and int(units) % 10:
        raise NotChargeable(f"Stripe charges {currency.upper()} only in multiples of 0.010: {amount} "
                            f"{currency.upper()} cannot be charged")
    return int(units)


def from_minor_units(units: int, currency: str) -> Decimal:
    places = exponent(currency)
    return Decimal(units).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def not_chargeable(request: ChargeRequest) -> ChargeResult | None:
    """A decline, before anything is sent, for an amount Stripe does not charge: no money moves,
    and the change that asked for it does not apply (R12), where the charge stayed pending and
    every later command on the workspace failed."""
    try:
        minor_units(request.amount, request.currency)
    except NotChargeable as e:
        return ChargeResult("declined", decline_code="amount_not_chargeable", message=str(e))
    return None


def invoice_of(idempotency_key: str) -> str:
    """The invoice id in a charge key `<workspace>:<invoice id>:<attempt>`."""
    parts = idempotency_key.split(":")
    return parts[-2] if len(parts) >= 3 else ""


def charge_id_of(intent: Any) -> str | None:
    """The id of a PaymentIntent's latest charge (localstripe expands it to the object)."""
    charge = intent.get("latest_charge")
    return charge if isinstance(charge, str) or charge is None else charge["id"]


def result_of(intent: Any) -> ChargeResult:
    """A PaymentIntent's state as the port's outcome; `processing` is not an outcome yet."""
    status = intent["status"]
    charge_id = charge_id_of(intent)
    error = intent.get("last_payment_error")
    if status == "succeeded":
        return ChargeResult("succeeded", charge_id=charge_id)
    if status == "requires_action":
        return ChargeResult("action_required", message="The customer must complete 3-D Secure authentication.")
    if status == "canceled":
        return ChargeResult("canceled")
    if status == "requires_payment_method" and error:
        code = error.get("decline_code") or error.get("code") or "card_declined"
        return ChargeResult("declined", charge_id=charge_id, decline_code=code, message=error.get("message") or "")
    raise GatewayUnavailable(f"PaymentIntent {intent['id']} is {status}: no outcome yet")


class StripeGateway:
    """A SubmittingGateway on Stripe (or localstripe at `api_base`); the ledger's database keeps
    its customers and payment methods."""

    kind = "stripe"

    def __init__(self, db_url: str, api_key: str, api_base: str | None = None) -> None:
        self.tables = SideTables(db_url, metadata)
        addresses = {"api": api_base.rstrip("/")} if api_base else {}
        self.client = stripe.StripeClient(api_key, base_addresses=addresses)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, db_url: str) -> StripeGateway:
        from domain.errors import LedgerError
        key = os.environ.get("STRIPE_API_KEY")
        if not key:
            raise LedgerError("invalid_request", "SUBLEDGER_PAYMENTS=stripe needs STRIPE_API_KEY")
        return cls(db_url, key, os.environ.get("STRIPE_API_BASE") or None)

    # ---------------------------------------------------------------- the port

    def submit(self, request: ChargeRequest) -> str | None:
        if not_chargeable(request):
            return None
        method = self._payment_method(request)
        if isinstance(method, ChargeResult):
            return None
        return self._create(request, method)["id"]

    def charge(self, request: ChargeRequest, reference: str | None = None) -> ChargeResult:
        if (refused := not_chargeable(request)) is not None:
            return refused
        amount = minor_units(request.amount, request.currency)
        if reference is None:
            method = self._payment_method(request)
            if isinstance(method, ChargeResult):
                return method
            reference = self._create(request, method)["id"]
        intent = self.retrieve(reference)
        self._check_same(request, intent, amount)
        if intent["status"] == "requires_confirmation":
            try:
                intent = self._intent(lambda: self.client.v1.payment_intents.confirm(reference))
            except (stripe.CardError, stripe.InvalidRequestError):  # declined, or another process confirmed it first
                intent = self._intent(lambda: self.client.v1.payment_intents.retrieve(reference))
        return result_of(intent)

    def cancel(self, idempotency_key: str, reference: str | None = None) -> ChargeResult:
        """Cancel unless it completed first; a key with no PaymentIntent is `canceled`."""
        if reference is None:
            found = [pi for pi in self.payment_intents() if pi["metadata"].get("charge_key") == idempotency_key]
            if not found:
                return ChargeResult("canceled")
            reference = found[0]["id"]
        intent = self.retrieve(reference)
        if intent["status"] in CANCELABLE and not intent.get("last_payment_error"):
            try:
                intent = self._intent(lambda: self.client.v1.payment_intents.cancel(reference))
            except stripe.InvalidRequestError as e:  # the customer completed it between the read and the cancel?
                intent = self.retrieve(reference)
                if intent["status"] in CANCELABLE:  # no: Stripe refused for a reason of its own; it stays pending
                    raise GatewayUnavailable(f"Stripe refused to cancel {reference}: {e.user_message or e}") from e
        return result_of(intent)

    # ------------------------------------------------------------ for reading

    def retrieve(self, reference: str) -> dict[str, Any]:
        """The PaymentIntent `reference` names. One the ledger recorded and Stripe does not know
        leaves its charge pending (GatewayUnavailable) for `stripe reconcile` to show."""
        try:
            return self._intent(lambda: self.client.v1.payment_intents.retrieve(reference))
        except stripe.InvalidRequestError as e:
            if e.http_status != 404:
                raise
            raise GatewayUnavailable(f"Stripe does not know PaymentIntent {reference}") from e

    def payment_intents(self, customers: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """The PaymentIntents this ledger made (of `customers` only, when given), listed per
        customer; localstripe rejects `customer=` (and has no search), so there every
        PaymentIntent is listed and filtered."""
        every = {"limit": 100, "expand": ["data.latest_charge"]}  # its refunds and disputes (reconcile)
        if customers is None:
            pages = [self._call(lambda: self.client.v1.payment_intents.list(every))]  # type: ignore[arg-type]
        else:
            try:
                pages = [self._call(lambda c=c: self.client.v1.payment_intents.list(  # type: ignore[misc]
                    {**every, "customer": c})) for c in customers]
            except stripe.InvalidRequestError:
                pages = [self._call(lambda: self.client.v1.payment_intents.list(every))]  # type: ignore[arg-type]
        wanted = None if customers is None else set(customers)
        for page in pages:
            for found in page.auto_paging_iter():
                intent = found.to_dict()
                if (intent.get("metadata") or {}).get("charge_key") and (wanted is None
                                                                         or intent.get("customer") in wanted):
                    yield intent

    def dispute_status(self, charge_id: str) -> str | None:
        """The status of a disputed charge's latest dispute (None if Stripe lists none)."""
        found = self._call(lambda: self.client.v1.disputes.list({"charge": charge_id, "limit": 1}))
        return found.data[0].status if found.data else None

    def close(self) -> None:
        self.tables.close()

    # -------------------------------------------------------------- internals

    def _create(self, request: ChargeRequest, method: str) -> Any:
        params = {
            "amount": minor_units(request.amount, request.currency), "currency": request.currency.lower(),
            "customer": self._customer(request.workspace_id), "payment_method": method,
            "payment_method_types": ["card"],
            "metadata": {"workspace": request.workspace_id, "invoice_id": invoice_of(request.idempotency_key),
                         "charge_key": request.idempotency_key, "payment_method": request.payment_method,
                         "description": request.description,  # localstripe refuses `description` itself
                         "requested_by": request.requested_by or ""},
        }
        return self._intent(lambda: self.client.v1.payment_intents.create(
            params, {"idempotency_key": request.idempotency_key}))  # type: ignore[arg-type]

    def _check_same(self, request: ChargeRequest, intent: Any, amount: int) -> None:
        asked = {"amount": amount, "currency": request.currency.lower(), "payment_method": request.payment_method}
        held = {"amount": intent["amount"], "currency": intent["currency"],
                "payment_method": intent["metadata"].get("payment_method")}
        differences = [f"{name} {held[name]} (now {asked[name]})" for name in asked if held[name] != asked[name]]
        requested_by = intent["metadata"].get("requested_by")
        if requested_by and request.requested_by and requested_by != request.requested_by:
            differences.append(f"requested_by {requested_by} (now {request.requested_by})")
        if differences or intent["metadata"].get("charge_key") != request.idempotency_key:
            raise IdempotencyMismatch(f"PaymentIntent {intent['id']} for {request.idempotency_key!r} was made with "
                                      f"{', '.join(differences) or 'another key'}")

    def _customer(self, workspace_id: str) -> str:
        row = self._db(lambda conn: conn.execute(select(customers_table.c.customer_id).where(
            customers_table.c.workspace_id == workspace_id)).scalar())
        if row:
            return row
        made = self._call(lambda: self.client.v1.customers.create(
            {"metadata": {"workspace": workspace_id}}, {"idempotency_key": f"customer:{workspace_id}"}))

        def keep(conn: Any) -> str:
            conn.execute(insert_if_absent(conn, customers_table, {"workspace_id": workspace_id,
                                                                  "customer_id": made["id"]}))
            return conn.execute(select(customers_table.c.customer_id).where(
                customers_table.c.workspace_id == workspace_id)).scalar_one()
        return self._db(keep)

    def _payment_method(self, request: ChargeRequest) -> str | ChargeResult:
        """The attached PaymentMethod for the request's token, or the decline attaching it gave."""
        ws, token = request.workspace_id, request.payment_method
        row = self._db(lambda conn: conn.execute(select(methods_table.c.payment_method_id).where(
            methods_table.c.workspace_id == ws, methods_table.c.token == token)).scalar())
        if row:
            return row
        customer = self._customer(ws)
        number = CARDS.get(token) or (CARDS["pm_card_visa"] if token.startswith("pm_card_") else None)
        if number is None:
            method_id = token
        else:
            card = {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
            method_id = self._call(lambda: self.client.v1.payment_methods.create({"type": "card", "card": card}))["id"]
        try:
            self._call(lambda: self.client.v1.payment_methods.attach(method_id, {"customer": customer}))
        except stripe.CardError as e:
            return ChargeResult("declined", decline_code=e.code or "card_declined", message=e.user_message or "")
        self._db(lambda conn: conn.execute(insert_if_absent(conn, methods_table, {
            "workspace_id": ws, "token": token, "payment_method_id": method_id})))
        return self._db(lambda conn: conn.execute(select(methods_table.c.payment_method_id).where(
            methods_table.c.workspace_id == ws, methods_table.c.token == token)).scalar_one())

    def _intent(self, work: Callable[[], Any]) -> dict[str, Any]:
        """A PaymentIntent as a plain dict (stripe-python 16's objects are not dicts)."""
        return self._call(work).to_dict()

    @staticmethod
    def _call(work: Callable[[], T]) -> T:
        """Stripe's answer; no answer (network, rate limit, 5xx) is GatewayUnavailable; a key
        Stripe holds for other parameters is IdempotencyMismatch (the charge is left pending)."""
        try:
            return work()
        except stripe.IdempotencyError as e:
            raise IdempotencyMismatch(f"Stripe holds the key for another request: {e.user_message or e}") from e
        except (stripe.APIConnectionError, stripe.RateLimitError) as e:
            raise GatewayUnavailable(f"Stripe did not answer: {e.user_message or e}") from e
        except stripe.APIError as e:
            raise GatewayUnavailable(f"Stripe failed: {e.user_message or e}") from e

    def _db(self, work: Callable[[Any], T]) -> T:
        try:
            return self.tables.run(work)
        except OperationalError as error:
            raise GatewayUnavailable(f"the ledger's database is unreachable: {error.orig}") from error
