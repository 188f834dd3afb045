"""The PL/pgSQL function that saves one batch of events on PostgreSQL in a single statement
(one round trip): the library's table lock and NOTIFY, the events, their chain links and the
due rows. adapters/chained_postgres.py calls it; replay/verify_chain.py states the link rules
it computes, byte for byte:

    hash = sha256(prev_hash | originator_id | version | notification_id | digest), hex

The digest (sha256 of topic + "\\n" + state) comes from the client, which has the bytes at hand;
the hash needs the notification id, so it is computed here, after the insert, in the stream's
version order, starting from the previous link the client passes (when its process wrote it)
or else the one in the chain table ("" before version 1). The text hashed is ASCII: uuid::text
is lower-case and hyphenated as Python's str(UUID), bigint::text decimal as Python's str(int).

The events and due rows arrive as one JSON document: cheaper for the client than seven array
parameters (call_function says why). Why a function: the library's insert path is five statements in a pipeline (lock, NOTIFY,
insert, sync, then our links), so the EXCLUSIVE lock is held across round trips, and psycopg's
pipeline machinery costs the client CPU. One statement in autocommit is one transaction: a
version conflict (the events' primary key) raises unique_violation and leaves nothing behind.
The lock is taken first, so notification ids are still issued in commit order.

The function's name carries FUNCTION_VERSION: a changed signature gets a new name, so processes
still running the previous release keep calling the one they know until they stop.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from psycopg.sql import SQL, Composed, Identifier, Literal

FUNCTION_VERSION = 2


def function_name(events_table: str) -> str:
    return f"{events_table}_save_v{FUNCTION_VERSION}"


def create_function(*, schema: str, events_table: str, chain_table: str, due_table: str,
                    id_type: str, channel: str, lock_timeout: int) -> Composed:
    """`CREATE OR REPLACE FUNCTION` of one JSON document (`payload`): `events`, each
    [originator_id, version, topic, state in base64, digest, the hash of the link before it when
    the client knows it, else null], and `due`, each [originator_id, workspace_id, version,
    due_us or null]. Returns each event's notification id and link hash, in the order given."""
    return SQL("""CREATE OR REPLACE FUNCTION {fn}(payload jsonb)
RETURNS TABLE (notification_id bigint, originator_id {id_type}, originator_version bigint, hash text)
LANGUAGE plpgsql AS $BODY$
#variable_conflict use_column
DECLARE
    e record;
    stream {id_type};
    prev text := '';
    h text;
    at_ int[] := '{{}}';
    ids bigint[] := '{{}}';
    oids {id_type}[] := '{{}}';
    versions bigint[] := '{{}}';
    dgs text[] := '{{}}';
    prev_hashes text[] := '{{}}';
    hashes text[] := '{{}}';
BEGIN
    SET LOCAL lock_timeout = {lock_timeout};
    LOCK TABLE {events} IN EXCLUSIVE MODE;
    NOTIFY {channel};
    FOR e IN
        WITH given AS (
            SELECT (x->>0)::{id_type} AS oid, (x->>1)::bigint AS ver, x->>2 AS topic, decode(x->>3, 'base64') AS state,
                   x->>4 AS dg, x->>5 AS pv, i
            FROM jsonb_array_elements(payload->'events') WITH ORDINALITY AS j(x, i)),
        inserted AS (
            INSERT INTO {events} AS t (originator_id, originator_version, topic, state)
            SELECT oid, ver, topic, state FROM given ORDER BY i
            RETURNING t.notification_id AS nid, t.originator_id AS oid, t.originator_version AS ver)
        SELECT g.i, ins.nid, g.oid, g.ver, g.dg, g.pv
        FROM inserted ins JOIN given g ON g.oid = ins.oid AND g.ver = ins.ver
        ORDER BY g.oid, g.ver
    LOOP
        IF stream IS DISTINCT FROM e.oid THEN
            stream := e.oid;
            prev := coalesce(e.pv, CASE WHEN e.ver > 1 THEN (
                SELECT c.hash FROM {chain} c WHERE c.originator_id = e.oid AND c.originator_version = e.ver - 1)
                END, '');
        END IF;
        h := encode(sha256(convert_to(
            prev || '|' || e.oid::text || '|' || e.ver::text || '|' || e.nid::text || '|' || e.dg, 'UTF8')), 'hex');
        at_ := at_ || e.i::int;
        ids := ids || e.nid;
        oids := oids || e.oid;
        versions := versions || e.ver;
        dgs := dgs || e.dg;
        prev_hashes := prev_hashes || prev;
        hashes := hashes || h;
        prev := h;
    END LOOP;
    INSERT INTO {chain} SELECT * FROM unnest(oids, versions, ids, dgs, prev_hashes, hashes);
    INSERT INTO {due} AS d
        SELECT (x->>0)::{id_type}, x->>1, (x->>2)::bigint, (x->>3)::bigint FROM jsonb_array_elements(payload->'due') x
        ON CONFLICT (originator_id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id,
        version = EXCLUDED.version, due_us = EXCLUDED.due_us WHERE d.version < EXCLUDED.version;
    RETURN QUERY SELECT r.nid, r.oid, r.ver, r.h FROM unnest(at_, ids, oids, versions, hashes) AS r(i, nid, oid, ver, h)
        ORDER BY r.i;
END;
$BODY$""").format(
        fn=Identifier(schema, function_name(events_table)),
        id_type=Identifier(id_type),
        lock_timeout=Literal(f"{lock_timeout}s"),
        events=Identifier(schema, events_table),
        chain=Identifier(schema, chain_table),
        due=Identifier(schema, due_table),
        channel=Identifier(channel),
    )


def call_function(schema: str, events_table: str) -> Composed:
    """The call: one text parameter, the JSON document. psycopg inspects every element of a list
    parameter on every call to pick its dumper, which cost a third of a command's client CPU with
    seven lists (py-spy); one string made by orjson costs a few microseconds."""
    return SQL("SELECT * FROM {}(%s::jsonb)").format(Identifier(schema, function_name(events_table)))


def payload(events: list[list[Any]], due: list[tuple[Any, ...]]) -> str:
    """The JSON document the function takes (see create_function)."""
    return orjson.dumps({"events": events, "due": due}).decode()


def state_text(state: bytes) -> str:
    return base64.b64encode(state).decode("ascii")
