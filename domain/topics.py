"""Which classes a stored event may name. The library resolves a stored topic by importing the
module it names: a topic changed by hand in the database could import any module installed,
or make an event of one class read as another. Only this ledger's own event classes (and the
library's snapshot class) are resolved; any other topic is a history changed by hand."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from domain.errors import LedgerError

OWN_MODULES = ("domain.", "domain:", "eventsourcing.domain:Snapshot")


class UnknownTopic(LedgerError):
    """event_chain_broken for a stored topic that names none of the ledger's classes; a load
    names the workspace and version from its hash chain instead (Loading.get)."""


def resolve_event_topic(topic: str, where: str = "a stored event") -> type:
    """The event class a stored topic names, or event_chain_broken when it names anything else."""
    cls: Any = None
    if topic.startswith(OWN_MODULES):
        try:
            cls = resolve_topic(topic)
        except Exception:  # noqa: BLE001 (the library's TopicError, or an attribute it cannot find)
            cls = None
    if not isinstance(cls, type) or not issubclass(cls, DomainEvent):
        raise UnknownTopic("event_chain_broken", f"{where} names {topic[:120]!r}, which is none of this ledger's "
                          "event classes: it was changed by hand. Run `subledger audit verify`")
    return cls


class LedgerMapper(Mapper[Any]):
    """The library's mapper, resolving only this ledger's own topics (MAPPER_TOPIC)."""

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        resolve_event_topic(stored_event.topic, f"the stored event at version {stored_event.originator_version} "
                                                f"of stream {stored_event.originator_id}")
        return super().to_domain_event(stored_event)
