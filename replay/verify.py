"""`audit verify`: are the stored events intact, and do the snapshots and the audit trail
agree with them? Pure reads: the ledger's store and the audit read model.

Checks, in order; the first that fails is the one reported at the top level:
1. event_chain      every stored event against its chain link (replay/verify_chain.py);
2. snapshots        each snapshot equals the state its events replay to;
3. audit_trail      the audit read model's own hash chain (projections/audit_trail.py);
4. audit_vs_events  one audit row per workspace event, same position, version, type, time
                    and money impact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import MapperDeserialisationError
from sqlalchemy.engine import Connection

from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.subscription import Subscription, workspace_uuid
from projections import audit_trail
from projections.runner import Projections
from projections.store import canonical_amount, iso
from replay.history import check_known

CHECKS = ("event_chain", "snapshots", "audit_trail", "audit_vs_events")


def verify(projections: Projections, workspace: str | None = None) -> dict[str, Any]:
    """Every check's result under its name; `ok`, and the first failure's fields at the top.
    The read models are caught up first; if that fails (on altered events, typically) the
    event chain still says where, and audit_vs_events reports the failure."""
    ledger = projections.source
    if workspace is not None:
        check_known(ledger, workspace)
    names = stream_names(ledger)
    results = {"event_chain": event_chain(ledger, names, workspace), "snapshots": snapshots(ledger, names, workspace)}
    try:
        projections.catch_up()
        behind = None
    except Exception as e:  # noqa: BLE001 (reported as a finding, after the chain's)
        behind = {"ok": False, "position": projections.position("audit_trail"), "problem": "catch_up_failed",
                  "detail": f"the read models cannot project the stored events: {why_unreadable(e)}"}
    with projections.engine.connect() as conn:
        results["audit_trail"] = audit_trail.verify(conn, workspace)
        results["audit_vs_events"] = behind or audit_vs_events(ledger, conn, names, projections.position("audit_trail"),
                                                               workspace)
    failed = next((name for name in CHECKS if not results[name]["ok"]), None)
    out: dict[str, Any] = {"ok": failed is None}
    if failed is not None:
        out.update({"failed": failed, **{k: v for k, v in results[failed].items() if k != "ok"}})
    else:
        chain = results["event_chain"]
        out.update({"events": chain["events"], "streams": chain["streams"],
                    "rows": results["audit_trail"]["rows"], "workspaces": results["audit_trail"]["workspaces"]})
    return {**out, "checks": results}


def stream_names(ledger: Ledger) -> dict[UUID, tuple[str, str | None]]:
    """Each known stream's kind and workspace id: the ledger's two logs and every listed workspace."""
    names: dict[UUID, tuple[str, str | None]] = {
        ledger.index.originator_id: ("workspace_index", None),
        ledger.catalog_log.originator_id: ("catalog_log", None),
        ledger.ledger_log.originator_id: ("ledger_log", None),
        ledger.payments_log.originator_id: ("payments_log", None),
    }
    try:
        for ws in ledger.workspaces():
            names[workspace_uuid(ws)] = ("workspace", ws)
    except Exception:  # noqa: BLE001 (a tampered index: streams are then named by their first event)
        pass
    return names


def name_of(ledger: Ledger, names: dict[UUID, tuple[str, str | None]], oid: UUID) -> tuple[str, str | None]:
    """A stream's kind and workspace; an unlisted stream is named by its registration event."""
    if oid not in names:
        first: Any = None
        try:
            first = next(iter(ledger.events.get(oid, lte=1)), None)
        except Exception:  # noqa: BLE001 (unreadable: leave it unnamed)
            first = None
        registered = isinstance(first, Subscription.WorkspaceRegistered)
        names[oid] = ("workspace", first.workspace_id) if registered else ("unlisted", None)
    return names[oid]


def event_chain(ledger: Ledger, names: dict[UUID, tuple[str, str | None]],
                workspace: str | None = None) -> dict[str, Any]:
    verify_chain = getattr(ledger.recorder, "verify_chain", None)
    if verify_chain is None:
        return {"ok": False, "problem": "no_chain", "detail": "this event store keeps no hash chain"}
    report = verify_chain(workspace_uuid(workspace) if workspace else None)
    out: dict[str, Any] = {"ok": report.ok, "events": report.events, "streams": report.streams,
                           "chained_since": report.since}
    if report.first is not None:
        kind, ws = name_of(ledger, names, report.first.originator_id)
        out.update({"stream": kind, "workspace": ws, **report.first.as_dict(),
                    "broken_streams": len(report.breaks)})
    elif (report.since or {}).get("relinked_missing_chain"):
        out.update({"ok": False, "problem": "relinked_as_found",
                    "detail": f"the chain was deleted and the events were linked as found at "
                              f"{report.since['chained_at']} (SUBLEDGER_RELINK_AS_FOUND): an edit made "
                              f"before that, up to position {report.since['up_to_position']}, cannot be told"})
    return out


def snapshots(ledger: Ledger, names: dict[UUID, tuple[str, str | None]], workspace: str | None = None) -> dict[str, Any]:
    """Each workspace snapshot must equal what replaying its events up to its version gives:
    a snapshot is loaded instead of those events, so an edited one would change decisions."""
    checked = 0
    if ledger.snapshots is None:
        return {"ok": True, "snapshots": 0}
    streams = [(workspace_uuid(workspace), workspace)] if workspace else \
        [(oid, ws) for oid, (kind, ws) in names.items() if kind == "workspace"]
    for oid, ws in streams:
        found = _stream_snapshots(ledger, oid, ws)
        if isinstance(found, dict):
            return found
        checked += found
    return {"ok": True, "snapshots": checked}


def _stream_snapshots(ledger: Ledger, oid: UUID, ws: str | None) -> int | dict[str, Any]:
    """How many snapshots of one workspace agree with its events; else the finding."""
    store = ledger.snapshots
    rows = getattr(store.recorder, "recorder", store.recorder)  # as stored: loads skip an edited one
    taken: dict[int, Any] = {}
    for stored in rows.select_events(oid):
        try:
            taken[stored.originator_version] = store.mapper.to_domain_event(stored)
        except Exception as e:  # noqa: BLE001 (an unreadable snapshot is the finding)
            return _unreadable(ws, stored.originator_version, "snapshot", e)
    if not taken:
        return 0
    checked, state, version = 0, None, 0
    events = iter(ledger.events.get(oid, lte=max(taken)))
    while True:
        try:
            event = next(events, None)
        except Exception as e:  # noqa: BLE001 (the next stored event does not decode: the finding)
            return _unreadable(ws, version + 1, "event", e)
        if event is None:
            break
        version = event.originator_version
        try:
            state = event.mutate(state)
        except Exception as e:  # noqa: BLE001 (it decodes but cannot be applied)
            return _unreadable(ws, version, "event", e)
        snap = taken.pop(version, None)
        if snap is None:
            continue
        checked += 1
        try:
            snapped = snap.mutate(None).__dict__
        except Exception as e:  # noqa: BLE001 (a snapshot that decodes but cannot be applied)
            return _unreadable(ws, version, "snapshot", e)
        if snapped != state.__dict__:
            return {"ok": False, "workspace": ws, "version": version, "problem": "snapshot_differs",
                    "detail": "the snapshot's state differs from replaying the events up to it"}
    if taken:
        return {"ok": False, "workspace": ws, "version": min(taken), "problem": "snapshot_without_event",
                "detail": "a snapshot at a version no stored event reaches"}
    return checked


def _unreadable(ws: str | None, version: int, what: str, error: Exception) -> dict[str, Any]:
    return {"ok": False, "workspace": ws, "version": version, "problem": "unreadable",
            "detail": f"the {what} at version {version} cannot be read or applied: {why_unreadable(error)}"}


def why_unreadable(error: Exception) -> str:
    """A stored row that does not decode is, first, one encrypted with a key this process lacks."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, MapperDeserialisationError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return ("it does not decode: written encrypted, it needs the key it was written with in "
                "$SUBLEDGER_CIPHER_KEY (docs/audit.md); if that key was given, the row was altered")
    if isinstance(error, LedgerError):
        return f"{error.message} [{error.code}]"
    return f"{type(error).__name__}: {error}"


def audit_vs_events(ledger: Ledger, conn: Connection, names: dict[UUID, tuple[str, str | None]], upto: int,
                    workspace: str | None = None) -> dict[str, Any]:
    """Walk the workspace events up to the audit trail's position beside its rows, by position."""
    rows = audit_trail.rows(conn, workspace)
    row = next(rows, None)
    n = 0
    for position, expected in _expected_rows(ledger, names, upto, workspace):
        if row is not None and row["position"] < position:
            return _disagree(row["workspace"], row["version"], row["position"], "no_event",
                             "an audit row whose event is not stored")
        if isinstance(expected, Exception):
            return _disagree(None, None, position, "unreadable", why_unreadable(expected))
        if row is None or row["position"] != position:
            return _disagree(expected["workspace"], expected["version"], position, "no_row",
                             "a stored event with no audit row")
        found = {k: _comparable(row[k]) for k in expected}
        differing = sorted(k for k in expected if found[k] != expected[k])
        if differing:
            return _disagree(expected["workspace"], expected["version"], position, "differs",
                             "; ".join(f"{k}: audit {found[k]!r}, event {expected[k]!r}" for k in differing))
        n += 1
        row = next(rows, None)
    if row is not None and row["position"] <= upto:
        return _disagree(row["workspace"], row["version"], row["position"], "no_event",
                         "an audit row whose event is not stored")
    return {"ok": True, "rows": n}


def _expected_rows(ledger: Ledger, names: dict[UUID, tuple[str, str | None]], upto: int,
                   workspace: str | None) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(position, what its audit row must say) for each workspace event up to `upto`."""
    start = 1
    while start <= upto:
        batch = ledger.recorder.select_notifications(start=start, limit=500, stop=upto)
        if not batch:
            return
        for n in batch:
            kind, ws = name_of(ledger, names, UUID(str(n.originator_id)))
            if kind not in ("workspace", "unlisted") or (workspace and ws != workspace):
                continue
            try:
                event = ledger.mapper.to_domain_event(n)
            except Exception as e:  # noqa: BLE001
                yield n.id, e
                continue
            if isinstance(event, Subscription.Event):
                yield n.id, {"workspace": ws, "version": event.originator_version,
                             "event_type": type(event).__name__, "occurred_at": iso(event.timestamp),
                             "money_impact": canonical_amount(audit_trail.money_impact(event)),
                             **{k: getattr(event, k) for k in WHO_AND_HOW}}
        start = batch[-1].id + 1


WHO_AND_HOW = ("actor_id", "actor_role", "channel", "cause", "reason", "idempotency_key", "catalog_version")
"""What an audit row says of who did it and how, as its event records it: a row rewritten with
another actor and its hashes recomputed still disagrees with the event."""


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return canonical_amount(value)
    return value


def _disagree(ws: str | None, version: int | None, position: int, problem: str, detail: str) -> dict[str, Any]:
    return {"ok": False, "workspace": ws, "version": version, "position": position, "problem": problem,
            "detail": detail}
