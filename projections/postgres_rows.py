"""Notification rows read from PostgreSQL as plain tuples (projections/decoding.py): imported
only for a PostgreSQL ledger, so a SQLite one never loads the driver."""

from __future__ import annotations

from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import InterfaceError, OperationalError, sql
from psycopg.rows import tuple_row

from projections.decoding import Row
from projections.partition_keys import SQL_BUCKET, Partition


@retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
def select_postgres(recorder: PostgresApplicationRecorder, start: int, limit: int, stop: int | None,
                    partition: Partition | None = None) -> list[Row]:
    """The library's select_notifications (same query, same retries), rows left as tuples; only
    `partition`'s streams when given (projections/partition_keys.py)."""
    statement = sql.SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
                        "WHERE notification_id >= %s{}{} ORDER BY notification_id LIMIT %s").format(
        sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name),
        sql.SQL(" AND notification_id <= %s") if stop is not None else sql.SQL(""),
        sql.SQL(f" AND {SQL_BUCKET} %% %s = %s") if partition is not None else sql.SQL(""))
    params: list[int] = [start]
    if stop is not None:
        params.append(stop)
    if partition is not None:
        params += [partition.n, partition.k]
    params.append(limit)
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
        curs.execute(statement, params, prepare=True)
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in curs.fetchall()]
