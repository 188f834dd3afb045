"""`replay rebuild`: the read models replayed from the events into fresh tables and swapped in
(projections/runner.py `Projections.rebuild`: writers are never blocked; what they record
meanwhile is caught up before and after the swap), with progress, and optionally verified.

With `verify`, before each swap the rebuilt tables and the live ones are brought to the same
position of the event log and compared row by row in primary-key order. Differences are
reported (counts, and the first few rows of each kind); the rebuilt tables, which come from
the events, are swapped in all the same. A broken event chain refuses the rebuild unless
`force` (event_chain_broken): it would rewrite the read models from altered events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import String, Table, select
from sqlalchemy.engine import Connection, Engine

from projections.readmodel import ReadModel
from projections.runner import APP, Projections, catch_up
from projections.store import dumps

EXAMPLES = 5


def _ordered(conn: Connection, table: Table) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Rows in primary-key order as Python orders the keys (byte order for text, hence COLLATE
    "C" on PostgreSQL, whose database collation may order otherwise)."""
    keys = list(table.primary_key.columns)
    postgres = conn.dialect.name == "postgresql"
    order = [k.collate("C") if postgres and isinstance(k.type, String) else k for k in keys]
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(select(table).order_by(*order))
    for row in result.mappings():
        yield tuple(row[k.name] for k in keys), dict(row)


def compare_table(engine: Engine, live: Table, rebuilt: Table) -> dict[str, Any]:
    """Merge the two tables' rows by primary key: rows only live, only rebuilt, or changed."""
    out: dict[str, Any] = {"rows_live": 0, "rows_rebuilt": 0, "only_live": 0, "only_rebuilt": 0, "changed": 0,
                           "examples": []}

    def note(kind: str, key: tuple[Any, ...], a: dict[str, Any] | None, b: dict[str, Any] | None) -> None:
        out[kind] += 1
        if len(out["examples"]) < EXAMPLES:
            diff = None if a is None or b is None else {k: [a[k], b.get(k)] for k in a if a[k] != b.get(k)}
            out["examples"].append({"kind": kind, "key": list(key), "live": a if diff is None else None,
                                    "rebuilt": b if diff is None else None, "columns": diff})

    with engine.connect() as c1, engine.connect() as c2:
        old, new = _ordered(c1, live), _ordered(c2, rebuilt)
        a, b = next(old, None), next(new, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                assert a is not None
                out["rows_live"] += 1
                note("only_live", a[0], a[1], None)
                a = next(old, None)
            elif a is None or b[0] < a[0]:
                out["rows_rebuilt"] += 1
                note("only_rebuilt", b[0], None, b[1])
                b = next(new, None)
            else:
                out["rows_live"] += 1
                out["rows_rebuilt"] += 1
                if a[1] != b[1]:
                    note("changed", a[0], a[1], b[1])
                a, b = next(old, None), next(new, None)
    out["ok"] = not (out["only_live"] or out["only_rebuilt"] or out["changed"])
    return out


def compare(projections: Projections, family: str, fresh: ReadModel, live: ReadModel) -> dict[str, Any]:
    """Both table sets brought to one position of the log, then compared table by table."""
    for _ in range(3):  # a writer's inline catch-up may move the live tables meanwhile
        at_fresh, at_live = fresh.view.max_tracking_id(APP) or 0, live.view.max_tracking_id(APP) or 0
        if at_fresh == at_live:
            break
        behind, ahead = (live, at_fresh) if at_live < at_fresh else (fresh, at_live)
        catch_up(projections.source, [behind], projections.batch, stop=ahead)
    position = fresh.view.max_tracking_id(APP) or 0
    tables = {name: compare_table(projections.engine, live.view.t[name], fresh.view.t[name]) for name in fresh.view.t}
    return {"ok": all(t["ok"] for t in tables.values()), "position": position,
            "live_position": live.view.max_tracking_id(APP) or 0, "live_tables": type(live).tag,
            "rebuilt_tables": type(fresh).tag, "tables": tables}


def rebuild(projections: Projections, families: list[str] | None = None, *, verify: bool = False,
            force: bool = False, progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Rebuild (and with `verify`, compare) the read models; `progress(family, position)`
    follows each replay. Raises LedgerError event_chain_broken unless `force`."""
    checked: dict[str, Any] = {}

    def before_swap(family: str, fresh: ReadModel, live: ReadModel | None) -> None:
        if verify and live is not None:
            checked[family] = compare(projections, family, fresh, live)

    tags = projections.rebuild(families, force=force, progress=progress, before_swap=before_swap)
    report: dict[str, Any] = {"ok": all(v["ok"] for v in checked.values()), "rebuilt": tags,
                              "head": projections.head(), "status": projections.status()}
    if verify:
        report["verify"] = checked
    return report


def summary(report: dict[str, Any]) -> list[str]:
    """One line per read model for a terminal."""
    out = []
    for family, tag in report["rebuilt"].items():
        line = f"{family}: rebuilt into {tag}"
        found = report.get("verify", {}).get(family)
        if found is not None:
            rows = sum(t["rows_rebuilt"] for t in found["tables"].values())
            if found["ok"]:
                line += f", {rows} rows identical to the live tables at position {found['position']}"
            else:
                bad = {n: t for n, t in found["tables"].items() if not t["ok"]}
                line += ", DIFFERS from the live tables: " + "; ".join(
                    f"{n}: {t['changed']} changed, {t['only_live']} only live, {t['only_rebuilt']} only rebuilt"
                    for n, t in bad.items())
                line += "".join(f"\n    {n} {dumps(e)}" for n, t in bad.items() for e in t["examples"])
        out.append(line)
    return out
