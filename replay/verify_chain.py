"""The event chain: how each stored event is linked to the one before it, and the walk that
finds the first event that no longer matches its link.

Every stream (a workspace, the workspace index, the catalog log) has one link per version:

    digest = sha256(topic + "\\n" + state)                 the stored bytes, as stored
    hash   = sha256(prev_hash | originator_id | version | notification_id | digest)

where prev_hash is the hash of the stream's previous version ("" before version 1). The
recorder writes the links in the transaction that inserts the events (adapters/chained_store.py);
this module only computes and compares, so verifying needs neither domain code nor the key of
an encrypted store. docs/audit.md says what the walk does and does not detect.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

CHANGED = "changed"
MISSING = "missing"
INSERTED = "inserted"
OUT_OF_ORDER = "out_of_order"
LINK_ALTERED = "link_altered"


@dataclass(frozen=True)
class Stored:
    """One stored event as the events table holds it."""

    originator_id: UUID
    version: int
    notification_id: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class Link:
    """One row of the chain table."""

    originator_id: UUID
    version: int
    notification_id: int
    digest: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Break:
    """The first place a stream stops matching its chain."""

    originator_id: UUID
    version: int
    position: int | None
    problem: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"originator_id": str(self.originator_id), "version": self.version, "position": self.position,
                "problem": self.problem, "detail": self.detail}


@dataclass
class ChainReport:
    """The walk's result: counts, and each broken stream's first break, earliest position first."""

    events: int = 0
    streams: int = 0
    breaks: list[Break] = field(default_factory=list)
    since: dict[str, Any] | None = None
    """When the store started linking its events (the first upgrade), as the recorder noted it."""

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first(self) -> Break | None:
        return self.breaks[0] if self.breaks else None


def digest(topic: str, state: bytes) -> str:
    return hashlib.sha256(topic.encode("utf-8") + b"\n" + bytes(state)).hexdigest()


def link_hash(prev_hash: str, originator_id: UUID, version: int, notification_id: int, digest_: str) -> str:
    text = f"{prev_hash}|{originator_id}|{version}|{notification_id}|{digest_}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def link(event: Stored, prev_hash: str) -> Link:
    """The link the recorder writes for `event`, after the stream's link `prev_hash`."""
    d = digest(event.topic, event.state)
    return Link(event.originator_id, event.version, event.notification_id, d, prev_hash,
                link_hash(prev_hash, event.originator_id, event.version, event.notification_id, d))


def link_all(events: Iterable[Stored]) -> Iterator[Link]:
    """Links for events already stored, ordered by (originator_id, version): the first upgrade."""
    prev_of: dict[UUID, str] = {}
    for event in events:
        made = link(event, prev_of.get(event.originator_id, ""))
        prev_of[event.originator_id] = made.hash
        yield made


def walk(events: Iterable[Stored], links: Iterable[Link]) -> ChainReport:
    """Compare the events with their links. Both iterables are ordered by (originator_id,
    version), as the database returns them; one stream at a time is held in memory."""
    report = ChainReport()
    for oid, stream_events, stream_links in _streams(events, links):
        report.streams += 1
        report.events += len(stream_events)
        found = check_stream(oid, stream_events, stream_links)
        if found is not None:
            report.breaks.append(found)
    report.breaks.sort(key=lambda b: (b.position is None, b.position or 0, str(b.originator_id)))
    return report


def check_stream(oid: UUID, events: list[Stored], links: list[Link]) -> Break | None:
    """The first version of one stream whose event and link disagree, or None."""
    by_version = {e.version: e for e in events}
    link_of = {lk.version: lk for lk in links}
    recorded_at = {lk.digest: lk.version for lk in links}
    for e in events:
        if e.version < 1:
            return Break(oid, e.version, e.notification_id, INSERTED,
                         f"an event at version {e.version}, which no stream has")
    top = max([*by_version, *link_of], default=0)
    prev = ""
    for version in range(1, top + 1):
        event, lk = by_version.get(version), link_of.get(version)
        if lk is None and event is None:
            return Break(oid, version, None, MISSING, "neither the event nor its link is stored (both deleted)")
        if lk is None:
            assert event is not None
            return Break(oid, version, event.notification_id, INSERTED,
                         "a stored event that the ledger never linked (written outside it)")
        if event is None:
            return Break(oid, version, lk.notification_id, MISSING,
                         f"the event recorded at position {lk.notification_id} is gone (deleted)")
        problem = _compare(event, lk, prev, recorded_at)
        if problem is not None:
            return Break(oid, version, event.notification_id, *problem)
        prev = lk.hash
    return None


def _compare(event: Stored, lk: Link, prev: str, recorded_at: dict[str, int]) -> tuple[str, str] | None:
    found = digest(event.topic, event.state)
    if found != lk.digest:
        if link_hash(prev, event.originator_id, event.version, lk.notification_id, found) == lk.hash:
            return LINK_ALTERED, "its link's digest was edited; the event still matches the link's hash (chain table edited)"
        other = recorded_at.get(found)
        if other is not None and other != event.version:
            return OUT_OF_ORDER, f"holds the event recorded as version {other} (events reordered)"
        return CHANGED, "its stored payload (which holds the timestamp) or topic differs from what was recorded"
    if event.notification_id != lk.notification_id:
        return OUT_OF_ORDER, (f"recorded at position {lk.notification_id}, now at {event.notification_id} "
                              "(moved in the notification log)")
    if lk.prev_hash != prev:
        return LINK_ALTERED, "its link does not follow the previous version's link (chain table edited)"
    if link_hash(prev, event.originator_id, event.version, event.notification_id, found) != lk.hash:
        return LINK_ALTERED, "its link's hash does not match the link (chain table edited)"
    return None


def _streams(events: Iterable[Stored], links: Iterable[Link]) -> Iterator[tuple[UUID, list[Stored], list[Link]]]:
    """Merge two (originator_id, version)-ordered iterables into per-stream lists."""
    ev = itertools.groupby(events, key=lambda e: e.originator_id)
    lk = itertools.groupby(links, key=lambda x: x.originator_id)
    e_next, l_next = next(ev, None), next(lk, None)
    while e_next is not None or l_next is not None:
        if l_next is None or (e_next is not None and e_next[0] < l_next[0]):
            assert e_next is not None
            yield e_next[0], list(e_next[1]), []
            e_next = next(ev, None)
        elif e_next is None or l_next[0] < e_next[0]:
            yield l_next[0], [], list(l_next[1])
            l_next = next(lk, None)
        else:
            yield e_next[0], list(e_next[1]), list(l_next[1])
            e_next, l_next = next(ev, None), next(lk, None)
