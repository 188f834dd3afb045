"""Read models on PostgreSQL: catch-up and rebuild, in events/s, beside raw psycopg COPY of the
same rows into same-shaped tables in the same run (the ratio is what to compare across machines),
with the process's peak memory after each phase (flat: it does not grow with the log).

    .venv/bin/python bench/projections.py [--events 100000] [--db URL] [--workers 1,2]

Events are made quickly in a child process by running the aggregate directly (no per-command
transaction): each workspace subscribes, then renews monthly for two years, saved in one
transaction. Catch-up projects them into fresh read models (every one, tracked, exactly-once);
rebuild replays them all into fresh tables and swaps them in. Each runs once per `--workers`
count (default: a single process, then one per core): more than one is the partitioned run
(projections/partitions.py), whose processes' peak memory is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

# This file's name would shadow the `projections` package when run as a script.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # also in the partitions' spawned processes, which run this file without it
import benchlib  # noqa: E402 (stdlib only: imported while bench/ is still on sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from adapters.settings import eventsourcing_env  # noqa: E402
from projections import partitions, registry  # noqa: E402
from projections.runner import ALL, Projections  # noqa: E402

STEPS = (("add-payment-method", {"payment_method": "pm_card_visa"}),
         ("subscribe", {"plan": "team", "interval": "month", "seats": 3}),
         ("set-storage-addon", {"addon": "storage-100gb"}))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def generate(url: str, target: int) -> int:
    """benchlib.generate in a child process, so this one's peak memory is the read models' alone."""
    code = ("import sys, json; sys.path.append(sys.argv[1]); import benchlib; "
            "print(benchlib.generate(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])))")
    done = subprocess.run([sys.executable, "-c", code, str(HERE), url, str(target), json.dumps(STEPS)],
                          cwd=HERE.parent, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def catch_up(url: str, workers: int) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process."""
    start, used = time.perf_counter(), cpu()
    with Projections(eventsourcing_env(url), workers=workers) as p:
        p.catch_up()
        assert all(s["lag"] == 0 for s in p.status())
    return time.perf_counter() - start, cpu() - used


def drop_read_models(pg: str, schema: str) -> None:
    """Every read model's tables, views and registry, so the next catch-up is a first build again."""
    with psycopg.connect(pg, autocommit=True) as conn:
        for name, kind in conn.execute("SELECT table_name, table_type FROM information_schema.tables "
                                       "WHERE table_schema = %s AND table_name LIKE 'rm\\_%%'", [schema]).fetchall():
            conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
                sql.SQL("VIEW" if kind == "VIEW" else "TABLE"), sql.Identifier(schema, name)))


def rebuild(url: str, head: int, workers: int) -> tuple[float, float, list[float]]:
    """Every read model replayed into fresh tables and swapped in; the resident memory sampled
    at each tenth of the log."""
    samples: list[float] = []

    def progress(family: str, position: int) -> None:
        if family == ALL[0].family and position * 10 >= head * (len(samples) + 1):
            samples.append(current_mib())

    start, used = time.perf_counter(), cpu()
    with Projections(eventsourcing_env(url), workers=workers) as p:
        p.rebuild(progress=progress)
    return time.perf_counter() - start, cpu() - used, samples


def copy_same_rows(pg: str, schema: str) -> tuple[float, int]:
    """COPY every row the live read models hold into empty same-shaped tables, table by table
    (the rows fetched first: only the COPY is timed)."""
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        tags = {r[0]: r[1] for r in conn.execute(sql.SQL("SELECT projection, tag FROM {}").format(
            sql.Identifier(registry.REGISTRY.name)))}
        tables = [model.table_name(t, tags[model.family]) for model in ALL for t in model.tables]
        elapsed, rows = 0.0, 0
        for t in tables:
            records = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))).fetchall()
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(f"copy_{t}"), sql.Identifier(t)))
            start = time.perf_counter()
            with conn.transaction(), conn.cursor().copy(
                    sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(f"copy_{t}"))) as copy:
                for record in records:
                    copy.write_row(record)
            elapsed += time.perf_counter() - start
            rows += len(records)
            del records
        return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Read-model catch-up and rebuild as a ratio of raw COPY of the same rows.")
    parser.add_argument("size", nargs="?", type=int, default=None, help="events (same as --events)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated process counts to run catch-up and rebuild with (1: a single process)")
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB if PostgreSQL, else "
                        "the local server's test database); the benchmark uses a schema of its own")
    args = parser.parse_args()
    pg = benchlib.postgres_base(args.db)
    target = args.size or args.events
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{pg}?schema={schema}"
    try:
        t0 = time.perf_counter()
        events = generate(url, target)
        print(f"generated {events} events in {time.perf_counter() - t0:.1f}s")
        base = peak_mib()
        counts = [int(w) for w in args.workers.split(",")]
        caught, rebuilt, samples, reports = {}, {}, {}, {}
        for i, w in enumerate(counts):
            if i:
                drop_read_models(pg, schema)
            caught[w] = catch_up(url, w)
            reports[("catch-up", w)] = list(partitions.reports)
            partitions.reports.clear()
        after_catch_up = peak_mib()
        for w in counts:
            *rebuilt[w], samples[w] = rebuild(url, events, w)
            reports[("rebuild", w)] = list(partitions.reports)
            partitions.reports.clear()
        after_rebuild = peak_mib()
        copied, rows = copy_same_rows(pg, schema)
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(f"{len(ALL)} read models, {rows} rows for {events} events; xN: N processes (1: a single one)")
    for phase, times in (("catch-up", caught), ("rebuild", rebuilt)):
        for w, (took, used) in times.items():
            parts = reports[(phase, w)]
            used += sum(r["cpu_s"] for r in parts)
            print(f"{phase + ' x' + str(w):12} {took:7.1f}s {events / took:10.0f} events/s  ratio {copied / took:.3f}"
                  f"  client CPU {used:.1f}s ({events / used:.0f} events per CPU second)")
            for r in sorted(parts, key=lambda r: r["partition"]):
                print(f"    partition {r['partition']:.0f}: started in {r['start_s']:.1f}s "
                      f"(CPU {r['start_cpu_s']:.1f}s), projected in {r['run_s']:.1f}s, CPU {r['cpu_s']:.1f}s in all, "
                      f"peak memory {r['peak_mib']:.0f} MiB")
    print(f"raw psycopg COPY of the same rows: {copied:.1f}s {events / copied:10.0f} events/s  ratio 1.000"
          f"  ({rows / copied:.0f} rows/s)")
    print(f"peak memory (getrusage maxrss): {base:.0f} MiB at start, {after_catch_up:.0f} MiB after catch-up, "
          f"{after_rebuild:.0f} MiB after rebuild")
    for w, taken in samples.items():
        print(f"resident memory at each tenth of the rebuild x{w} (MiB, this process): "
              + " ".join(f"{m:.0f}" for m in taken))


if __name__ == "__main__":
    main()
