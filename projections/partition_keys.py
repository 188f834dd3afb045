"""Which workspace belongs to which partition of a partitioned catch-up, and what a read model's
tracking rows then say about its position (projections/partitions.py runs the partitions).

A partition k of n takes the events of the streams whose id hashes to k: the last two bytes of
the originator UUID modulo n (a workspace's id is a UUID5, so its bytes are a hash of the
workspace id; the same expression in SQL lets PostgreSQL filter the rows it sends). Every event
of a workspace is in one partition, so each partition folds its workspaces exactly as a single
run does. The ledger's own streams (workspace index, catalog log, ledger clock) fall in whatever
partition they hash to; no read model projects them.

Tracking: a read model's tracking table holds its own row (application name `subledger`, the
position readers see) and, while a partitioned run is under way or after one crashed, one row
per partition (`subledger#k/n`): every event at or below max(own row, partition row) whose
stream hashes to k is projected. A single run that finds partition rows past its own position
cannot go on as one stream: it raises `PartitionsPending`, and the runner finishes those
partitions first (projections/runner.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from uuid import UUID

SQL_BUCKET = "((get_byte(uuid_send(originator_id), 14) << 8) | get_byte(uuid_send(originator_id), 15))"
"""The stream's bucket (0..65535) in PostgreSQL: the last two bytes of its UUID."""


class Partition(NamedTuple):
    k: int
    n: int

    def tracking_name(self, app: str) -> str:
        return f"{app}#{self.k}/{self.n}"

    def holds(self, originator_id: UUID) -> bool:
        """Whether this partition takes the stream `originator_id` (as the SQL filter decides)."""
        return (originator_id.int & 0xFFFF) % self.n == self.k


class PartitionsPending(Exception):
    """A read model has partition rows past its own position: a partitioned run (of `n`
    partitions) is under way or was interrupted, and must be finished before a single run."""

    def __init__(self, n: int) -> None:
        super().__init__(f"a partitioned catch-up of {n} partitions is unfinished")


def parse(name: str, app: str) -> Partition | None:
    """The partition a tracking row's name stands for, or None for the read model's own row."""
    if not name.startswith(app + "#"):
        return None
    k, _, n = name[len(app) + 1:].partition("/")
    return Partition(int(k), int(n))


def pending(rows: Mapping[str, int], app: str) -> int | None:
    """The number of partitions of the unfinished partitioned run these tracking rows show, if any."""
    own = rows.get(app) or 0
    found = {part.n for name, position in rows.items()
             if position > own and (part := parse(name, app)) is not None}
    if len(found) > 1:
        raise RuntimeError(f"tracking rows of partitioned runs of {sorted(found)} partitions at once")
    return found.pop() if found else None


def position(rows: Mapping[str, int], app: str, partition: Partition | None) -> int | None:
    """The read model's position for a run (a single one, or `partition`): every event of that
    run's streams at or below it is projected. A single run raises PartitionsPending when partition
    rows are ahead of the read model's own; a partition refuses rows of another partitioning."""
    own = rows.get(app)
    n = pending(rows, app)
    if partition is None:
        if n is not None:
            raise PartitionsPending(n)
        return own
    if n is not None and n != partition.n:
        raise RuntimeError(f"a partitioned run of {n} partitions is unfinished; finish it before one of {partition.n}")
    mine = rows.get(partition.tracking_name(app))
    if own is None:
        return mine
    return own if mine is None else max(own, mine)
