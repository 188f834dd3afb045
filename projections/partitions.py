"""Partitioned catch-up and rebuild: one process per partition of the workspaces, on PostgreSQL.

Projecting is CPU-bound in Python (decoding, folding, rendering rows) while PostgreSQL idles,
so a large backlog (a first build, a rebuild, a long outage) goes faster on several cores.
Every read model's rows are per workspace (the audit chain, the journal's balances, invoices and
notices are all keyed by workspace), so workspaces can be projected independently:

1. The coordinator (`run`, from `Projections.catch_up` / `rebuild`) fixes the head H and starts
   n processes (multiprocessing spawn); each builds its own Ledger and views from the
   environment, and projects, up to H, the events of the streams that hash to its partition k
   (projections/partition_keys.py), in the same batches, transactions and rows as a single run.
   After each batch it records its own tracking row (`subledger#k/n`) at the last notification
   it scanned, so an interrupted run resumes where each partition stopped.
2. When every partition reached H the coordinator folds the partition rows into each read
   model's own position (`settle`): the position readers and `project status` see moves from
   where it was to H in one step. The rest (what arrived after H) is caught up as one stream.

A partition that fails fails the run with its error; the others are stopped; every committed
batch stays, and the next catch-up (partitioned or not: a single run finishes unfinished
partitions first, projections/runner.py) resumes. Ordering while a partitioned run is under way:
each workspace's rows reflect a prefix of its own events, in order; different workspaces may be
at different points; the read model's position (and so `min_position` reads) moves only at the end.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import resource
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking
from sqlalchemy import text

from domain.errors import LedgerError
from projections.partition_keys import Partition, parse, pending
from projections.readmodel import Fold, ReadModel
from projections.store import LOCK_KEY

if TYPE_CHECKING:
    from projections.runner import Projections

WORKERS = "SUBLEDGER_PROJECTION_WORKERS"
"""Processes for a partitioned catch-up or rebuild (default: the machine's cores, at most
DEFAULT_MAX, on PostgreSQL; 1, a single run, on SQLite, whose one writer would only make them wait)."""
DEFAULT_MAX = 4
"""Each partition holds about eight connections (its ledger's and one per read model): more
processes than this only when asked for (--workers, $SUBLEDGER_PROJECTION_WORKERS)."""
MIN_BACKLOG = 20_000
"""Events behind below which one process is quicker than starting several (about a second each)."""


def default_workers(env: Mapping[str, str]) -> int:
    configured = env.get(WORKERS) or os.environ.get(WORKERS)
    if configured:
        try:
            workers = int(configured)
        except ValueError:
            raise ValueError(f"${WORKERS} must be a whole number of processes") from None
        return max(1, workers)
    if env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        return 1
    return max(1, min(DEFAULT_MAX, os.cpu_count() or 1))


Worker = Callable[..., None]


def run(projections: Projections, chosen: Sequence[ReadModel], workers: int, *, min_backlog: int = MIN_BACKLOG,
        progress: Callable[[int], None] | None = None, worker: Worker | None = None) -> dict[str, int]:
    """Catch `chosen` up to the head in `workers` partitions, when on PostgreSQL and at least
    `min_backlog` events behind, or when a partitioned run was left unfinished (each read model's
    is resumed with its own number of partitions; `workers` 1 leaves that to the single run). Returns the
    events each read model took (none when it left the work to a single run). One partitioned
    run per database at a time (a session advisory lock); another waits, then finds less to do."""
    taken = {p.family: 0 for p in chosen}
    if not chosen or workers <= 1 or projections.env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        return taken  # a single run (which finishes an unfinished partitioned one first)
    with projections.engine.connect() as conn:
        key = {"name": "rm_partitioned_run"}
        conn.execute(text(f"SELECT pg_advisory_lock({LOCK_KEY})"), key)
        conn.commit()
        try:
            groups = unfinished_groups(chosen)
            fresh = groups.pop(None, [])
            head = projections.head()
            app = chosen[0].application_name
            behind = head - min((p.view.positions().get(app) or 0 for p in fresh), default=head)
            if fresh and behind >= min_backlog:
                groups[workers] = groups.get(workers, []) + fresh
            if not groups:
                return taken  # a short backlog: the single run is quicker, and nothing needs settling
            for n, group in sorted(groups.items()):
                for family, count in _spawn(projections, group, n, head, progress, worker or work).items():
                    taken[family] += count
            settle(chosen)
        finally:
            conn.execute(text(f"SELECT pg_advisory_unlock({LOCK_KEY})"), key)
            conn.commit()
    return taken


def _spawn(projections: Projections, chosen: Sequence[ReadModel], n: int, head: int,
           progress: Callable[[int], None] | None, worker: Worker) -> dict[str, int]:
    env = {**projections.env, "CREATE_TABLE": "n"}  # the coordinator made the tables
    models = [(projections.models[p.family], type(p).tag) for p in chosen]
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    processes = [context.Process(target=_with_coordinator, args=(worker, env, models, k, n, head, projections.batch,
                                                                 results),
                                 name=f"projection-partition-{k}-of-{n}", daemon=True) for k in range(n)]
    for process in processes:
        process.start()
    try:
        return _wait(processes, results, progress)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        results.close()


def _wait(processes: list[Any], results: Any, progress: Callable[[int], None] | None) -> dict[str, int]:
    """Collect every partition's outcome; the first failure (or a partition that died without
    one) is raised, naming the partition."""
    n = len(processes)
    started = time.time()
    reports.clear()
    reached = [0] * n
    done: dict[int, dict[str, int]] = {}
    while len(done) < n:
        try:
            message = results.get(timeout=0.5)
        except queue.Empty:
            dead = [k for k, process in enumerate(processes) if k not in done and process.exitcode is not None]
            try:  # a dead partition's last words may still be on their way
                message = results.get(timeout=1.0) if dead else None
            except queue.Empty:
                raise stopped(dead[0], n, processes[dead[0]].exitcode) from None
        if message is not None:
            kind, k, *payload = message
            if kind == "progress":
                reached[k] = payload[0]
            elif kind == "done":
                done[k], report, reached[k] = payload
                reports.append({"partition": k, "start_s": report.pop("ready_at") - started, **report})
            else:
                error, where = payload
                error.add_note(f"in projection partition {k} of {n}:\n{where}")
                raise error
        if progress is not None:
            progress(min(reached))
    taken: dict[str, int] = {}
    for counts in done.values():
        for family, count in counts.items():
            taken[family] = taken.get(family, 0) + count
    return taken


reports: list[dict[str, float]] = []
"""What each partition process of the last partitioned run used (bench/projections.py prints it): `peak_mib`
(peak resident memory), `cpu_s` (its CPU time), `start_s` (from being started to its views being
ready: interpreter, imports, connections) and `run_s` (projecting)."""


def _with_coordinator(worker: Worker, *args: Any) -> None:
    """Run `worker` for as long as its coordinator lives. `daemon` ends partitions only when the
    coordinator exits cleanly: one killed (kill -9, the OOM killer) left them writing the tables
    of a run it no longer led, racing the next run that resumes it. The parent's sentinel becomes
    ready when it dies, whatever killed it."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), name="coordinator-watch", daemon=True).start()
    worker(*args)


def _exit_after(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(70)  # at once: the coordinator that would take the outcome is gone


def work(env: dict[str, str], models: list[tuple[type[ReadModel], str]], k: int, n: int, head: int, batch: int,
         results: Any) -> None:
    """One partition's process: its own Ledger and views, partition k of n projected up to `head`."""
    try:
        taken, ready_at = project_partition(env, models, Partition(k, n), head, batch,
                                            lambda at: results.put(("progress", k, at)))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        results.put(("done", k, taken, {"peak_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
                                        "start_cpu_s": _ready_cpu[0], "ready_at": ready_at,
                                        "run_s": time.time() - ready_at}, head))
    except BaseException as e:  # noqa: BLE001 (handed to the coordinator, which raises it)
        results.put(("error", k, _portable(e), traceback.format_exc()))


def project_partition(env: Mapping[str, str], models: list[tuple[type[ReadModel], str]], partition: Partition,
                      head: int, batch: int,
                      progress: Callable[[int], None] | None = None) -> tuple[dict[str, int], float]:
    """Partition `partition` of `models` (on their `tag` tables) projected up to `head`, in this
    process; returns the events each took and when (time.time()) its views were ready."""
    from domain.ledger import Ledger
    from projections.runner import attach, catch_up
    from projections.store import shared_datastore

    source = Ledger(dict(env))
    fold = Fold(source)
    datastore = shared_datastore(env)
    chosen = [attach(env, source, model, tag, fold, datastore=datastore) for model, tag in models]
    ready_at = time.time()
    _ready_cpu[:] = [time.process_time()]
    try:
        taken = catch_up(source, chosen, batch, stop=head, fold=fold, partition=partition, progress=progress)
    finally:
        datastore.engine.dispose()
        source.close()
    return taken, ready_at


_ready_cpu = [0.0]
"""CPU seconds a partition process spent before it could project (interpreter, imports, connections)."""


def _portable(error: BaseException) -> BaseException:
    """The error itself if it survives pickling, else a RuntimeError that names it."""
    try:
        copy = pickle.loads(pickle.dumps(error))
        if isinstance(copy, BaseException):
            return copy
    except Exception:  # noqa: BLE001, S110
        pass
    return RuntimeError(f"{type(error).__name__}: {error}")


def finish(source: Any, chosen: Sequence[ReadModel], batch: int, fold: Fold) -> dict[str, int]:
    """Finish an unfinished partitioned run in this process, one partition after the other (a
    single run that found one: its read models cannot move on as one stream until then)."""
    from projections.runner import catch_up

    head = source.recorder.max_notification_id() or 0
    taken = {p.family: 0 for p in chosen}
    groups = unfinished_groups(chosen)
    groups.pop(None, None)  # nothing unfinished: the single run goes on with them as one stream
    for n, group in sorted(groups.items()):  # type: ignore[arg-type]
        for k in range(n):  # type: ignore[arg-type]
            for family, count in catch_up(source, group, batch, stop=head, fold=fold,
                                          partition=Partition(k, n)).items():
                taken[family] += count
    settle(chosen)
    return taken


def unfinished_groups(chosen: Sequence[ReadModel]) -> dict[int | None, list[ReadModel]]:
    """The read models by the partition count of the partitioned run each has unfinished (None:
    none). Different read models may have been left by runs of different counts; each is
    finished with its own, as a partition only resumes rows of its own partitioning."""
    groups: dict[int | None, list[ReadModel]] = {}
    for p in chosen:
        groups.setdefault(pending(p.view.positions(), p.application_name), []).append(p)
    return groups


def settle(chosen: Sequence[ReadModel]) -> None:
    """Move each read model's own position to where all its partitions are, and delete the
    partition rows at or below it, in one transaction under each read model's exclusive lock
    (after any partition batch in flight). Rows past it (a partition that went further) stay."""
    if not chosen:
        return
    with chosen[0].view.transaction(commit=True) as session:
        for p in chosen:
            app = p.application_name
            rows = p.view.lock_positions(session)
            own = rows.get(app) or 0
            n = pending(rows, app)
            names = [name for name in rows if parse(name, app) is not None]
            if n is not None:
                parts = {parse(name, app): position for name, position in rows.items() if parse(name, app)}
                at = [parts.get(Partition(k, n)) for k in range(n)]
                if all(a is not None for a in at) and min(a for a in at if a is not None) > own:
                    own = min(a for a in at if a is not None)
                    p.view.record_position(session, Tracking(app, own))
            p.view.forget_positions(session, names, own)


def stopped(k: int, n: int, exitcode: int | None) -> LedgerError:
    """A partition's process gone without a word (killed, out of memory): not a bug, and nothing
    lost: its committed batches are kept, and the next run resumes from them."""
    how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    return LedgerError("unavailable", f"projection partition {k} of {n} stopped before finishing ({how}); what "
                       "it projected is kept: run the command again to resume")
