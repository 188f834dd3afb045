"""Outbound webhooks (Standard Webhooks): endpoints, their outbox and dead letters, kept in the
ledger's own database beside the events (docs/webhooks.md).

Three tables, all written through the outbox view (a tracking recorder, so the follower in
adapters/webhooks_outbox.py commits outbox rows and its position in one transaction):

- `webhook_endpoints`: URL, signing secret (`whsec_...`), event types, optional workspace;
- `webhook_messages`: one row per (endpoint, event), `pending`, `delivered` or `dead`;
- `webhooks_outbox_tracking`: the follower's position in the notification log.

A message's `webhook-id` is `msg_<endpoint>_<notification id>`: the same on every attempt and
after every restart, so receivers deduplicate on it.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

import httpx
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from sqlalchemy import (BigInteger, Column, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        func, select, update)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from domain.commands import check_workspace_id
from domain.errors import LedgerError
from domain.subscription import events as subscription_events
from domain.text import one_line, unprintable
from projections.store import ReadModelView, UtcDateTime, view_env

APP = "subledger"
NAME = "webhooks_outbox"
"""The follower's name: its tracking table is webhooks_outbox_tracking."""
ALL_EVENTS = "*"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


class WebhookTables:
    """The webhook tables, in the shape ReadModelView expects of a model."""

    @classmethod
    def define(cls, metadata: MetaData, tag: str = "") -> dict[str, Table]:
        endpoints = Table(
            "webhook_endpoints", metadata,
            Column("id", String(32), primary_key=True),
            Column("url", Text, nullable=False),
            Column("secret", String(100), nullable=False),
            Column("events", Text, nullable=False),
            Column("workspace", String(64)),
            Column("since", BigInteger, nullable=False),
            Column("created_at", UtcDateTime, nullable=False),
            Column("removed_at", UtcDateTime),
        )
        messages = Table(
            "webhook_messages", metadata,
            Column("endpoint_id", String(32), nullable=False),
            Column("notification_id", BigInteger, nullable=False),
            Column("msg_id", String(80), nullable=False, unique=True),
            Column("workspace", String(64), nullable=False),
            Column("event_type", String(64), nullable=False),
            Column("body", Text, nullable=False),
            Column("status", String(12), nullable=False),
            Column("attempts", Integer, nullable=False),
            Column("created_at", UtcDateTime, nullable=False),
            Column("next_attempt_at", UtcDateTime, nullable=False),
            Column("last_attempt_at", UtcDateTime),
            Column("last_status", Integer),
            Column("last_error", Text),
            Column("finished_at", UtcDateTime),
            PrimaryKeyConstraint("endpoint_id", "notification_id"),
            Index("webhook_messages_queue", "status", "endpoint_id", "workspace", "notification_id"),
        )
        return {"endpoints": endpoints, "messages": messages}


class WebhookView(ReadModelView):
    """The outbox's tracking recorder, owning the webhook tables (created with it)."""

    model: ClassVar[Any] = WebhookTables
    tag: ClassVar[str] = ""


def open_view(env: Mapping[str, str]) -> WebhookView:
    """The webhook tables of the ledger of `env`, created if missing."""
    view_environment = Environment(NAME, view_env(env, NAME))
    view_environment[view_environment.create_keys("CREATE_TABLE")[0]] = "y"
    factory = InfrastructureFactory[WebhookView].construct(view_environment)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This declarative base already contains a class")
        try:
            return factory.tracking_recorder(WebhookView)
        except DBAPIError:  # another process created the tables between the check and the create
            return factory.tracking_recorder(WebhookView)


def event_type_names() -> frozenset[str]:
    """Every workspace event type, as the feed and the read models name them (a type matches
    by its own name only, not its base's)."""
    found, todo = set(), [subscription_events.Event]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found - {"Event", "Created"})


def parse_event_types(text: str) -> list[str]:
    """`*`, or a comma-separated list of known event types."""
    wanted = sorted({t.strip() for t in text.split(",") if t.strip()})
    if wanted == [ALL_EVENTS]:
        return wanted
    if not wanted or ALL_EVENTS in wanted:
        raise LedgerError("invalid_request", "the events to send are '*' alone or a list of event types")
    known = event_type_names()
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise LedgerError("invalid_request", f"unknown event type(s) {', '.join(u[:60] for u in unknown[:5])}: "
                          f"use '*' or some of {', '.join(sorted(known))}")
    return wanted


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host; anything else is refused before it is stored."""
    if len(url) > 2000:
        raise LedgerError("invalid_request", "a webhook URL is at most 2000 characters")
    if unprintable(url) or any(c.isspace() for c in url):
        raise LedgerError("invalid_request", f"webhook URL {one_line(url)[:100]!r} holds a space or a control character")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise LedgerError("invalid_request", f"webhook URL {url[:100]!r} is not a URL: {e}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LedgerError("invalid_request", f"webhook URL {url[:100]!r}: only http:// and https:// URLs with a "
                          "host are accepted")
    if parsed.userinfo:
        raise LedgerError("invalid_request", "a webhook URL may not carry a user name or password")
    if link_local(parsed.host):
        raise LedgerError("invalid_request", f"webhook URL {url[:100]!r}: a link-local or unspecified address (a "
                          "cloud metadata service) is never a receiver")
    return str(parsed)


METADATA_SERVICES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
"""Cloud metadata services outside the link-local ranges: AWS's over IPv6, Alibaba Cloud's."""


def link_local(host: str) -> bool:
    """A literal link-local or unspecified address, or a cloud metadata service's, in any of the
    forms a URL may write one (dotted, one integer, hex, IPv4 within IPv6, a trailing dot).
    Names are not resolved."""
    text = host.strip("[]").rstrip(".")
    try:
        address: Any = ipaddress.ip_address(int(text, 0) if text[:2].lower() == "0x" or text.isdigit() else text)
    except ValueError:
        try:  # the forms the resolver takes too: a.b.c, a.b, hex or octal parts (inet_aton)
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return False
    address = embedded_ipv4(address) or address
    return address.is_link_local or address.is_unspecified or address in METADATA_SERVICES


LAST_32_BITS = [ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96")]
"""IPv6 prefixes whose last 32 bits are an IPv4 address that a translator reaches: NAT64 (well-known
and local-use), SIIT's translated form and the old IPv4-compatible form."""


def embedded_ipv4(address: Any) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches: mapped (::ffff:a.b.c.d), 6to4
    (2002:ab:cd::) or one of LAST_32_BITS."""
    if address.version == 4:
        return None
    if any(address in prefix for prefix in LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(endpoint_id: str, notification_id: int) -> str:
    return f"msg_{endpoint_id}_{notification_id}"


def signed_headers(secret: str, msg_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed by the `standardwebhooks` library."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, at, body),
            "content-type": "application/json", "user-agent": "subledger-webhooks/1"}


def matches(endpoint: Mapping[str, Any], event_type: str, workspace: str, notification_id: int) -> bool:
    """Does an event go to an endpoint: after it was added, of a type and workspace it asked for."""
    kinds = endpoint["events"].split(",")
    return (notification_id > endpoint["since"] and (ALL_EVENTS in kinds or event_type in kinds)
            and endpoint["workspace"] in (None, workspace))


class WebhookStore:
    """Endpoints and messages of one ledger database (the CLI's side of the tables)."""

    def __init__(self, env: Mapping[str, str], view: WebhookView | None = None) -> None:
        self.env = dict(env)
        self._owns_view = view is None
        self.view = view if view is not None else open_view(env)
        self.endpoints = self.view.t["endpoints"]
        self.messages = self.view.t["messages"]

    def close(self) -> None:
        if self._owns_view:
            self.view.close()

    def __enter__(self) -> WebhookStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ endpoints

    def add(self, url: str, event_types: str, workspace: str | None, head: Callable[[], int],
            now: datetime | None = None) -> dict[str, Any]:
        """A new endpoint for the events recorded after `head()` (the log's last notification id,
        read under the outbox follower's lock, so no batch it writes later can miss the endpoint)."""
        url = check_url(url)
        kinds = parse_event_types(event_types)
        if workspace is not None:
            check_workspace_id(workspace)
        row = {"id": "we_" + secrets.token_hex(8), "url": url, "secret": new_secret(), "events": ",".join(kinds),
               "workspace": workspace, "since": 0, "created_at": now or datetime.now(timezone.utc),
               "removed_at": None}
        with self.view.transaction(commit=True) as session:
            self.view.lock_position(session, APP)
            row["since"] = head()
            session.execute(self.endpoints.insert().values(**row))
        return row

    def live_endpoints(self, session: Session) -> list[dict[str, Any]]:
        query = select(self.endpoints).where(self.endpoints.c.removed_at.is_(None))
        return [dict(r) for r in session.execute(query).mappings()]

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Live endpoints with their message counts by status (never the secret)."""
        counts = (select(self.messages.c.endpoint_id, self.messages.c.status, func.count())
                  .group_by(self.messages.c.endpoint_id, self.messages.c.status))
        with self.view.transaction(commit=False) as session:
            endpoints = self.live_endpoints(session)
            tally: dict[str, dict[str, int]] = {}
            for endpoint_id, status, n in session.execute(counts):
                tally.setdefault(endpoint_id, {})[status] = n
        return [{"id": e["id"], "url": e["url"], "events": e["events"].split(","), "workspace": e["workspace"],
                 "since": e["since"], "created_at": e["created_at"],
                 "messages": {s: tally.get(e["id"], {}).get(s, 0) for s in (PENDING, DELIVERED, DEAD)}}
                for e in sorted(endpoints, key=lambda e: (e["created_at"], e["id"]))]

    def remove(self, endpoint_id: str, now: datetime | None = None) -> None:
        """Stop an endpoint: nothing more is queued or sent to it; its messages are dropped."""
        at = now or datetime.now(timezone.utc)
        with self.view.transaction(commit=True) as session:
            self.view.lock_position(session, APP)
            done = session.execute(update(self.endpoints).where(
                self.endpoints.c.id == endpoint_id, self.endpoints.c.removed_at.is_(None)).values(removed_at=at))
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise LedgerError("not_found", f"no webhook endpoint {endpoint_id[:40]!r}")
            session.execute(self.messages.delete().where(self.messages.c.endpoint_id == endpoint_id,
                                                         self.messages.c.status != DELIVERED))

    # ------------------------------------------------------------ dead letters

    def dead(self) -> list[dict[str, Any]]:
        query = (select(self.messages.c.msg_id, self.messages.c.endpoint_id, self.messages.c.notification_id,
                        self.messages.c.workspace, self.messages.c.event_type, self.messages.c.attempts,
                        self.messages.c.created_at, self.messages.c.finished_at, self.messages.c.last_status,
                        self.messages.c.last_error)
                 .where(self.messages.c.status == DEAD).order_by(self.messages.c.notification_id))
        with self.view.transaction(commit=False) as session:
            return [dict(r) for r in session.execute(query).mappings()]

    def retry(self, msg_ids: Iterable[str], now: datetime | None = None) -> None:
        """Queue dead letters again, as fresh messages (attempts and age start over). A retried
        letter goes out before its workspace's messages still pending for that endpoint."""
        at = now or datetime.now(timezone.utc)
        with self.view.transaction(commit=True) as session:
            for msg_id in msg_ids:
                done = session.execute(update(self.messages).where(
                    self.messages.c.msg_id == msg_id, self.messages.c.status == DEAD).values(
                    status=PENDING, attempts=0, created_at=at, next_attempt_at=at, finished_at=None))
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    raise LedgerError("not_found", f"no dead letter {msg_id[:80]!r}")
