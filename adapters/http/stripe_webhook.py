"""`POST /stripe/webhook`: Stripe's news about charges, verified, deduplicated, then settled.

The signature is checked with stripe-python (`STRIPE_WEBHOOK_SECRET`), and its timestamp must be
within 300 s of the wall clock in either direction (the library alone accepts any future one);
otherwise 400 and nothing recorded. The wall clock, not the ledger's: Stripe signs with real time.

A verified event is never trusted for the outcome itself: it names a PaymentIntent, and the
ledger asks the gateway for that PaymentIntent's state and records it through its settle path
(Ledger.settle_reported, channel `billing_provider`). So a repeated, late or out-of-order event
records nothing new: an outcome already recorded leaves no charge pending under that reference.
Event ids are kept (`stripe_webhook_events`) so a redelivery is answered without asking again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Column, MetaData, String, Table, select

from adapters.side_tables import SideTables, insert_if_absent
from adapters.http import problems
from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.payments import GatewayUnavailable
from domain.plain_errors import described, sentence
from projections.store import UtcDateTime
from projections.views import event_types

TOLERANCE_SECONDS = 300
STRIPE_NAME = described(r"^[A-Za-z0-9_.-]+$", "letters, digits, '_', '.' or '-' (evt_1, invoice.paid)")
"""An event's id (evt_...) and type (payment_intent.succeeded): never a control character."""
PAYMENT_INTENT_EVENTS = {"payment_intent.succeeded", "payment_intent.payment_failed",
                         "payment_intent.requires_action", "payment_intent.canceled"}
INVOICE_EVENTS = {"invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
                  "invoice.payment_action_required"}
log = logging.getLogger("subledger.stripe")

metadata = MetaData()
events_table = Table(
    "stripe_webhook_events", metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("outcome", String(255), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)


class SeenEvents:
    """Stripe event ids already handled, in the ledger's database."""

    def __init__(self, db_url: str) -> None:
        self.tables = SideTables(db_url, metadata)

    def outcome(self, event_id: str) -> str | None:
        return self.tables.run(lambda conn: conn.execute(
            select(events_table.c.outcome).where(events_table.c.event_id == event_id)).scalar())

    def remember(self, event_id: str, kind: str, outcome: str) -> None:
        row = {"event_id": event_id, "type": kind, "outcome": outcome, "received_at": datetime.now(timezone.utc)}
        self.tables.run(lambda conn: conn.execute(insert_if_absent(conn, events_table, row)))

    def close(self) -> None:
        self.tables.close()


def webhook_router(wall_clock: Callable[[], float] = time.time, secret: str | None = None) -> APIRouter:
    """The router; `secret` defaults to $STRIPE_WEBHOOK_SECRET, read at each request."""
    router = APIRouter(tags=["stripe"], responses=problems.documented(400, 503))

    @router.post("/stripe/webhook", include_in_schema=False)  # Stripe's endpoint, signed, not a client API
    async def stripe_webhook(request: Request) -> Any:
        payload = await request.body()
        key = secret or os.environ.get("STRIPE_WEBHOOK_SECRET")
        if not key:
            return problems.problem("unavailable", "STRIPE_WEBHOOK_SECRET is not set: webhooks cannot be verified",
                                    instance=request.url.path)
        refused = verify(payload, request.headers.get("Stripe-Signature", ""), key, wall_clock())
        if refused:
            log.warning("refused a Stripe webhook: %s", refused)
            return problems.problem("invalid_request", refused, status=400, instance=request.url.path)
        try:
            event = StripeEvent.model_validate_json(payload)
        except ValidationError as e:
            return problems.problem("invalid_request", f"the body is not a Stripe event: {sentence(e.errors()[0])}",
                                    status=400, instance=request.url.path)
        seen: SeenEvents = request.app.state.stripe_events
        return await run_in_threadpool(handle_event, request.app.state.ledger, seen, event)

    return router


def verify(payload: bytes, header: str, secret: str, now: float) -> str | None:
    """Why the signature is refused, or None: stripe-python checks the HMAC; the timestamp must
    be within TOLERANCE_SECONDS of `now`, in the past or the future."""
    if not header:
        return "the request carries no Stripe-Signature header"
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), header, secret, tolerance=None)
        timestamp, _ = stripe.WebhookSignature._get_timestamp_and_signatures(header, "v1")
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, IndexError):
        return ("the Stripe-Signature does not verify: it is malformed, made with another secret, or the body "
                "changed after it was signed")
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return f"the Stripe-Signature timestamp is {int(timestamp - now)} s from now (more than {TOLERANCE_SECONDS} s)"
    return None


class StripeObject(BaseModel):
    """The parts of an event's object the ledger reads; Stripe sends many more."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    metadata: dict[str, str] | None = None
    payment_intent: str | dict[str, Any] | None = None


class StripeData(BaseModel):
    object: StripeObject


class StripeEvent(BaseModel):
    """A signed body of another shape (only the secret's holder can send one) is refused 400,
    never an internal error."""

    id: str = Field(min_length=1, max_length=255, pattern=STRIPE_NAME)
    type: str = Field(min_length=1, max_length=255, pattern=STRIPE_NAME)
    data: StripeData


def handle_event(ledger: Ledger, seen: SeenEvents, event: StripeEvent) -> JSONResponse:
    event_id, kind = event.id, event.type
    earlier = seen.outcome(event_id)
    if earlier is not None:
        return JSONResponse({"received": True, "event": event_id, "outcome": "duplicate", "first": earlier})
    try:
        outcome = dispatch(ledger, kind, event.data.object)
    except LedgerError as e:  # not remembered: Stripe delivers it again
        return problems.problem_of(e)
    except GatewayUnavailable as e:
        return problems.problem("unavailable", f"Stripe did not answer about {event_id}: {e}")
    if outcome != "still_pending":  # kept pending (awaiting the customer, or no answer): ask again when redelivered
        seen.remember(event_id, kind, outcome)
    return JSONResponse({"received": True, "event": event_id, "outcome": outcome})


def dispatch(ledger: Ledger, kind: str, obj: StripeObject) -> str:
    """What the event amounts to in the ledger: `recorded: <fact types>` or why nothing was."""
    if kind in PAYMENT_INTENT_EVENTS:
        return settle(ledger, kind, (obj.metadata or {}).get("workspace"), obj.id)
    if kind in INVOICE_EVENTS:
        intent = obj.payment_intent
        intent_id = intent.get("id") if isinstance(intent, dict) else intent
        retrieve = getattr(ledger.payments, "retrieve", None)
        if not isinstance(intent_id, str) or not intent_id or retrieve is None:
            log.info("Stripe %s %s has no PaymentIntent of this ledger: acknowledged", kind, obj.id)
            return "no_ledger_charge"
        return settle(ledger, kind, (retrieve(intent_id).get("metadata") or {}).get("workspace"), intent_id)
    if kind.startswith("customer.subscription."):
        log.info("Stripe %s %s acknowledged: subscriptions are the ledger's own, none is kept at Stripe",
                 kind, obj.id)
        return "not_mirrored"
    log.info("Stripe event type %s acknowledged and not used", kind)
    return "ignored"


def settle(ledger: Ledger, kind: str, workspace: str | None, reference: str | None) -> str:
    try:
        known = bool(workspace and reference) and ledger.get(workspace) is not None  # type: ignore[arg-type]
    except LedgerError:  # not a workspace id at all
        known = False
    if not known:
        log.info("Stripe %s for %s names no workspace of this ledger: acknowledged", kind, reference)
        return "unknown_charge"
    assert workspace and reference
    recorded = ledger.settle_reported(workspace, reference)
    sub = ledger.get(workspace)
    if not recorded and sub and any(p.get("provider_reference") == reference for p in sub.pending_charges.values()):
        return "still_pending"
    if not recorded:
        log.info("Stripe %s for %s: no charge pending under it (unknown, or its outcome is recorded)", kind, reference)
        return "nothing_pending"
    return "recorded: " + ", ".join(event_types(recorded))
