"""Reading a batch of notifications as domain events, for catch-up and rebuild.

The library's path (a `Notification` dataclass per row, then `Mapper.to_domain_event`, whose
JSON decoder calls back into Python for every object) costs more per event than projecting
it. Here, on PostgreSQL, rows come back as tuples; and where stored events are plain JSON
(no cipher, no compressor) orjson parses them and one walk applies the transcoder's own
transcodings, then the event is upcast and made exactly as `to_domain_event` makes it. Any
event this path cannot read (an unknown transcoding, text orjson refuses) goes through the
library's mapper, which decodes it or raises its usual error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, Transcoding, find_id_convertor

from domain.topics import resolve_event_topic
from projections.partition_keys import Partition

Row = tuple[int, Any, int, str, bytes]
"""notification id, originator id, originator version, topic, stored state."""


def select_rows(recorder: Any, start: int, limit: int, stop: int | None = None) -> list[Row]:
    """The notifications from `start` (inclusive) up to `stop`, at most `limit`, in order."""
    if _on_postgres(recorder):
        from projections.postgres_rows import select_postgres

        return select_postgres(recorder, start, limit, stop)
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in recorder.select_notifications(start=start, limit=limit, stop=stop)]


def select_partition(recorder: Any, start: int, limit: int, stop: int, partition: Partition) -> tuple[list[Row], int]:
    """The notifications of `partition` from `start` up to `stop`, at most `limit`, and the last
    notification id this read covered (its own or another partition's): on PostgreSQL the
    server filters, so the other partitions' rows are neither sent nor decoded."""
    if _on_postgres(recorder):
        from projections.postgres_rows import select_postgres

        rows = select_postgres(recorder, start, limit, stop, partition)
        return rows, rows[-1][0] if len(rows) == limit else stop
    rows = select_rows(recorder, start, limit, stop)
    through = rows[-1][0] if len(rows) == limit else stop
    return [r for r in rows if partition.holds(r[1])], through


def _on_postgres(recorder: Any) -> bool:
    postgres = sys.modules.get("eventsourcing.postgres")  # never imported for a SQLite ledger
    return postgres is not None and isinstance(recorder, postgres.PostgresApplicationRecorder)


class Decoder:
    """Domain events from rows, as `mapper.to_domain_event` would make them."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.fast = isinstance(transcoder, JSONTranscoder) and not mapper.cipher and not mapper.compressor
        self.names: dict[str, Transcoding] = transcoder.names if self.fast else {}  # type: ignore[attr-defined]
        self.classes: dict[tuple[str, type], tuple[type, int, Any]] = {}

    def decode(self, row: Row) -> Any:
        if self.fast:
            try:
                return self._decode(row)
            except Exception:  # noqa: BLE001 (the library's path decodes it or says why not)
                pass
        from eventsourcing.persistence import Notification

        position, originator_id, version, topic, state = row
        return self.mapper.to_domain_event(Notification(id=position, originator_id=originator_id,
                                                        originator_version=version, topic=topic, state=state))

    def decode_all(self, rows: Sequence[Row]) -> list[Any]:
        return [self.decode(row) for row in rows]

    def _decode(self, row: Row) -> Any:
        _, originator_id, version, topic, state = row
        key = (topic, type(originator_id))
        found = self.classes.get(key)
        if found is None:
            cls = resolve_event_topic(topic)
            found = self.classes[key] = (cls, getattr(cls, "class_version", 1),
                                         find_id_convertor(cls, type(originator_id)))
        cls, class_version, convert = found
        event_state = self._walk(orjson.loads(state))
        event_state["originator_id"] = convert(originator_id)
        event_state["originator_version"] = version
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", event_state)
        return event

    def _walk(self, value: Any) -> Any:
        """JSONTranscoder._decode_obj applied to every object, innermost first."""
        if type(value) is dict:
            for k, v in value.items():
                kind = type(v)
                if kind is dict:
                    data = v.get("_data_")
                    if len(v) == 2 and type(data) is str and "_type_" in v:  # an instant, amount or id
                        value[k] = self.names[v["_type_"]].decode(data)
                    else:
                        value[k] = self._walk(v)
                elif kind is list:
                    value[k] = self._walk(v)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self.names[value["_type_"]].decode(value["_data_"])
            return value
        if type(value) is list:
            return [self._walk(v) if type(v) is dict or type(v) is list else v for v in value]
        return value
