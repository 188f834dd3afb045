"""Running the read models: inline catch-up, rebuild, status; the follower is projections/follower.py.

Inline (the default, and the only mode on SQLite, whose recorder has no subscribe()):
after a command, `catch_up` pulls the notifications after each view's tracked position
from the ledger's notification log and projects them in batches. A large backlog on
PostgreSQL (a first build, a rebuild, a long outage) is first projected by several processes,
one per partition of the workspaces (projections/partitions.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.projection import ProjectionRunner
from eventsourcing.utils import Environment, strtobool
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from sqlalchemy.engine import Engine

from domain.errors import LedgerError
from domain.ledger import Ledger
from domain.subscription import workspace_uuid
from projections import partitions, registry
from projections.audit_trail import AuditTrail
from projections.decoding import Decoder, select_partition, select_rows
from projections.entitlements import Entitlements
from projections.invoices import Invoices
from projections.journal import Journal
from projections.notices import Notices
from projections.partition_keys import Partition, PartitionsPending
from projections.partition_keys import position as tracked_position
from projections.plan_state import PlanState
from projections.readmodel import Fold, ReadModel, project_together
from projections.store import shared_datastore, view_env
from projections.upcoming_invoice import UpcomingInvoice

ALL: tuple[type[ReadModel], ...] = (PlanState, UpcomingInvoice, Invoices, Journal, AuditTrail, Entitlements,
                                      Notices)
APP = Ledger.name


class ReadModelsOutdated(LedgerError):
    """Another process rebuilt a read model at a version this code does not project: only a
    restart with that code helps (a follower stops; a server answers 503)."""


class Projections:
    """The read models of one ledger database. `source` is the Ledger whose events they
    project (and whose repository the fold reads); one is made from `env` if not given."""

    def __init__(self, env: Mapping[str, str], source: Ledger | None = None,
                 models: Iterable[type[ReadModel]] = ALL, batch: int = 500, *, force: bool = False,
                 workers: int | None = None) -> None:
        """`force`: rebuild (when a read model's version moved) even from a broken event chain.
        `workers`: processes for a large catch-up or rebuild on PostgreSQL (projections/partitions.py;
        default $SUBLEDGER_PROJECTION_WORKERS, else the machine's cores; 1: a single run)."""
        self.env = dict(env)
        self.workers = partitions.default_workers(self.env) if workers is None else max(1, workers)
        self.min_backlog = partitions.MIN_BACKLOG
        """Events behind from which catch-up and rebuild run partitioned."""
        self.partition_worker: partitions.Worker | None = None
        """What each partition's process runs (partitions.work; tests replace it)."""
        self.datastore = shared_datastore(self.env)
        """One engine (connection pool) for the registry and every read model's view."""
        self.engine: Engine = self.datastore.engine
        self._owns_source = source is None
        self.source = source if source is not None else Ledger(self.env)
        self.models = {m.family: m for m in models}
        self.batch = batch
        self.running: dict[str, ReadModel] = {}
        self._following = threading.Lock()
        """Threads of one server share these read models: one follows the registry at a time."""
        self.fold = Fold(self.source)
        """One fold for every read model of this database: each event is folded once."""
        registry.ensure_registry(self.engine)
        with self.engine.connect() as conn:
            live = registry.active(conn)
        for family, model in self.models.items():
            found = live.get(family)
            if found is None:  # first build: live at once, filled by tracked (resumable) catch-up
                self.running[family] = self._attach(model, registry.next_tag(model, None), create=True)
                registry.activate(self.engine, model, type(self.running[family]).tag)
            elif found.version == model.version:
                self.running[family] = self._attach(model, found.tag)
            else:  # the code's version moved: replay into new tables, then swap
                self.rebuild([family], force=force)

    # ------------------------------------------------------------ lifecycle

    def _attach(self, model: type[ReadModel], tag: str, create: bool = False) -> ReadModel:
        return attach(self.env, self.source, model, tag, self.fold, create=create, datastore=self.datastore)

    def close(self) -> None:
        self.running.clear()
        self.engine.dispose()
        if self._owns_source:
            self.source.close()

    def __enter__(self) -> Projections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ inline

    def head(self) -> int:
        return self.source.recorder.max_notification_id() or 0

    def moved(self) -> list[str]:
        """The read models whose live tables (the registry's) are not the ones this process projects into."""
        with self.engine.connect() as conn:
            live = registry.active(conn)
        return [f for f, running in self.running.items() if f in live and live[f].tag != type(running).tag]

    def follow_registry(self) -> None:
        """Move to the tables the registry says are live: a rebuild by another process swapped
        the stable views and dropped the tables this process was projecting into (a follower or
        a server runs for days). A rebuild by newer code (another version of a read model) is a
        reason to restart this process, and says so."""
        with self._following:  # the lock first: a thread waiting for it holds no pooled connection
            with self.engine.connect() as conn:
                live = registry.active(conn)
            for family, running in list(self.running.items()):
                found = live.get(family)
                if found is None or found.tag == type(running).tag:
                    continue
                if found.version != self.models[family].version:
                    raise ReadModelsOutdated("unavailable", f"the {family} read model was rebuilt at version "
                                             f"{found.version} by other code; this process projects version "
                                             f"{self.models[family].version}: restart it with that code")
                self.running[family] = self._attach(self.models[family], found.tag)

    def position(self, family: str) -> int:
        return self.running[family].view.max_tracking_id(APP) or 0

    def catch_up(self, families: Iterable[str] | None = None, *, workers: int | None = None) -> dict[str, int]:
        """Project everything recorded so far; returns how many events each read model took.
        A large backlog on PostgreSQL is projected by `workers` processes first (partitions.run)."""
        self.follow_registry()
        tags = {f: type(r).tag for f, r in self.running.items()}
        try:
            return self._catch_up(families, workers)
        except Exception:
            self.follow_registry()
            if tags == {f: type(r).tag for f, r in self.running.items()}:  # not a swap that came in between
                raise
            return self._catch_up(families, workers)

    def _catch_up(self, families: Iterable[str] | None, workers: int | None) -> dict[str, int]:
        chosen = [self.running[f] for f in (families or self.running)]
        taken = self._partitioned(chosen, workers)
        for family, count in catch_up(self.source, chosen, self.batch, fold=self.fold).items():
            taken[family] += count
        return taken

    def _partitioned(self, chosen: list[ReadModel], workers: int | None,
                     progress: Callable[[int], None] | None = None) -> dict[str, int]:
        return partitions.run(self, chosen, self.workers if workers is None else workers,
                              min_backlog=self.min_backlog, progress=progress, worker=self.partition_worker)

    # ------------------------------------------------------------ rebuild

    def rebuild(self, families: Iterable[str] | None = None, *, force: bool = False, workers: int | None = None,
                progress: Callable[[str, int], None] | None = None,
                before_swap: Callable[[str, ReadModel, ReadModel | None], None] | None = None) -> dict[str, str]:
        """Replay every event into fresh tables of each read model's current version, then
        swap the stable views to them and drop the old tables. Returns family -> new tag.
        Refused (event_chain_broken) when the stored events fail their chain, unless `force`:
        a rebuild would rewrite the read models, the audit trail too, from altered events. (On
        PostgreSQL the chain is checked while the replay runs; a broken one stops it before any
        swap and its fresh tables are dropped, as if it had been refused before it began.)
        `progress(family, position)` follows the replay; `before_swap(family, fresh, live)` sees
        both table sets while the live one is still live (replay/rebuild.py compares them).
        A large log on PostgreSQL is replayed by `workers` processes (partitions.run), then the
        rest as one stream; the chain check and the swap happen once, after both."""
        checking = None
        if not force:
            if self.env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
                checking = Background(self.check_events)
            else:
                self.check_events()
        chosen = list(families or self.models)
        fresh: dict[str, ReadModel] = {}

        def step(position: int) -> None:
            if checking is not None:
                checking.raise_if_failed()
            if progress is not None:
                for f in chosen:
                    progress(f, position)
        try:
            for family in chosen:
                model = self.models[family]
                with self.engine.connect() as conn:
                    current = registry.active(conn).get(family)
                # an interrupted rebuild's tables resume where they stopped
                fresh[family] = self._attach(model, registry.next_tag(model, current), create=True)
            self._partitioned(list(fresh.values()), workers, progress=step)
            catch_up(self.source, list(fresh.values()), self.batch, fold=self.fold, progress=step)
            if checking is not None:
                checking.result()
        except BaseException:
            if checking is not None and checking.failed():
                self._discard(fresh)  # as if refused before it began: nothing replayed from altered events is kept
                checking.result()
            raise
        done = {}
        for family, new in fresh.items():
            if before_swap is not None:
                before_swap(family, new, self.running.get(family))
            self.running.pop(family, None)
            tag = type(new).tag
            registry.activate(self.engine, self.models[family], tag)
            catch_up(self.source, [new], self.batch, fold=self.fold)  # what arrived during the swap
            self.running[family] = new
            done[family] = tag
        return done

    def _discard(self, fresh: Mapping[str, ReadModel]) -> None:
        self.fold.forget()
        for family, new in fresh.items():
            with self.engine.begin() as conn:
                registry.drop_tables(conn, self.models[family], type(new).tag)

    def check_events(self) -> None:
        """Raise event_chain_broken if the source's store keeps a chain (adapters/chained_store.py)
        and a stored event no longer matches it."""
        bad = broken_link(self.source)
        if bad is None:
            return
        try:
            listed = {workspace_uuid(ws): ws for ws in self.source.workspaces()}
        except Exception:  # noqa: BLE001 (the index itself may be what was altered)
            listed = {}
        where = f"workspace {listed[bad.originator_id]}" if bad.originator_id in listed else \
            f"stream {bad.originator_id}"
        raise LedgerError("event_chain_broken", f"the stored events fail their hash chain at {where} version "
                          f"{bad.version} ({bad.problem}: {bad.detail}); rebuilding would rewrite the read models "
                          "from them. Run `subledger audit verify`; `project rebuild --force` rebuilds anyway")

    # ------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        self.follow_registry()
        head = self.head()
        with self.engine.connect() as conn:
            live = registry.active(conn)
        out = []
        for family in self.running:
            position = self.position(family)
            out.append({"projection": family, "version": live[family].version, "tables": live[family].tag,
                        "position": position, "head": head, "lag": head - position})
        return out

    # ------------------------------------------------------------ follower

    def runner_env(self, projection: type[ReadModel]) -> dict[str, str]:
        env = view_env(self.env, projection.name)
        env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"] = "1", "2"
        return env

    def start_runners(self) -> list[ProjectionRunner[Any, Any]]:
        """One library ProjectionRunner per read model: subscribe from its position and
        project each event as it is notified."""
        runners = []
        for family, running in self.running.items():
            projection, view_class = self.models[family].bound(type(running).tag, self.source)
            runner: ProjectionRunner[Any, Any] = ProjectionRunner(
                application_class=Ledger, projection_class=projection, view_class=view_class,
                env=self.runner_env(projection),
            )
            runner.__enter__()
            runners.append(runner)
        return runners


def broken_link(source: Ledger, originator_id: UUID | None = None) -> Any:
    """The first stored event (of one stream, or of all) that fails its hash chain, or None: also
    when the store keeps no chain (adapters/chained_store.py)."""
    verify_chain = getattr(source.recorder, "verify_chain", None)
    report = verify_chain(originator_id) if verify_chain is not None else None
    return None if report is None or report.ok else report.first


def attach(env: Mapping[str, str], source: Ledger, model: type[ReadModel], tag: str, fold: Fold, *,
           create: bool = False, datastore: SQLAlchemyDatastore) -> ReadModel:
    """The model's projection on its `tag` tables of `datastore`, folding with `fold`; `create` makes
    them (a first build or a rebuild) even where the environment says CREATE_TABLE=n (tables set up
    once, elsewhere). The view is named and made as the library's SQLAlchemy factory makes it, on the
    shared datastore: one engine for every read model, not one each."""
    projection, view_class = model.bound(tag, source)
    view_environment = Environment(projection.name, view_env(env, projection.name))
    view = view_class(datastore=datastore, tracking_table_name=f"{projection.name.lower()}_tracking")
    if create or strtobool(view_environment.get("CREATE_TABLE") or "yes"):
        view.create_table()
    attached = projection(view)
    attached.fold = fold
    return attached


class Background:
    """`check()` run in a thread (on PostgreSQL a rebuild checks the event chain while it replays:
    the check is mostly the server reading the log, the replay mostly this process projecting)."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(check,), name="check-events", daemon=True)
        self.thread.start()

    def _run(self, check: Callable[[], None]) -> None:
        try:
            check()
        except BaseException as e:  # noqa: BLE001 (handed to the rebuilding thread)
            self.error = e

    def failed(self) -> bool:
        self.thread.join()
        return self.error is not None

    def raise_if_failed(self) -> None:
        if not self.thread.is_alive() and self.error is not None:
            raise self.error

    def result(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


BATCH_SECONDS = 2.0  # ok-float: seconds
"""A batch grows (up to MAX_BATCH events) while it takes less than this (seconds), and shrinks when longer:
few transactions when catching up a long log, short ones (and short write locks) when busy."""
MAX_BATCH = 5000


def catch_up(source: Ledger, projections: list[ReadModel], batch: int, *,
             progress: Callable[[int], None] | None = None, stop: int | None = None,
             fold: Fold | None = None, partition: Partition | None = None) -> dict[str, int]:
    """Pull notifications after the projections' positions (up to `stop`, if given), decode each
    batch once (projections/decoding.py), fold each event once, and give every projection the part it has not seen, all in
    one transaction recording each projection's position (projections/readmodel.py
    `project_together`). `progress` is told the position reached after each batch.
    `partition`: only that partition's streams, up to `stop` (projections/partitions.py). A single
    run that finds a partitioned one unfinished finishes it first, here, one partition after another."""
    taken = {p.family: 0 for p in projections}
    if not projections:
        return taken
    fold = fold or Fold(source)
    conflicted = None
    while True:
        try:
            _catch_up(source, projections, batch, taken, progress, stop, fold, partition)
            return taken
        except PartitionsPending:
            if partition is not None:
                raise
            for family, count in partitions.finish(source, projections, batch, fold).items():
                taken[family] += count
        except Exception as e:
            if not row_conflict(e):
                raise
            if conflicted == sum(taken.values()):  # twice at one place, from the positions as committed: not a race
                raise damaged() from e
            conflicted = sum(taken.values())


def row_conflict(error: BaseException | None) -> bool:
    """A unique key violated, in the driver's own words (PostgreSQL's 23505, SQLite's "UNIQUE
    constraint failed"), under SQLAlchemy's and the library's wrappers: not any other integrity
    error, which is a read model's bug, not rows past its position."""
    for _ in range(8):
        if error is None:
            return False
        if getattr(error, "sqlstate", None) == "23505" or (isinstance(error, sqlite3.IntegrityError)
                                                  and str(error).startswith("UNIQUE constraint failed")):
            return True
        error = getattr(error, "orig", None) or error.__cause__
    return False


def damaged() -> LedgerError:
    """A read model's rows already hold an event it has not recorded taking: its tracking row
    was rewound or removed by hand. Only a rebuild (new tables, from the events) mends that."""
    return LedgerError("read_models_damaged", "a read model already holds rows for events past the position it "
                       "recorded (its tracking row was rewound or removed by hand), so it cannot take them "
                       "again. Run `subledger project rebuild` to build the read models afresh from the events")


def _catch_up(source: Ledger, projections: list[ReadModel], batch: int, taken: dict[str, int],
              progress: Callable[[int], None] | None, stop: int | None, fold: Fold,
              partition: Partition | None) -> None:
    decoder = Decoder(source.mapper)
    positions = {p.family: tracked_position(p.view.positions(), APP, partition) or 0 for p in projections}
    size = batch
    while True:
        started = time.perf_counter()
        start = min(positions.values())
        through = None
        if partition is None:
            rows = select_rows(source.recorder, start + 1, size, stop)
            if not rows:
                return
        else:
            assert stop is not None, "a partition runs up to a fixed head"
            if start >= stop:
                return
            rows, through = select_partition(source.recorder, start + 1, size, stop, partition)
        items = [(event, Tracking(APP, row[0])) for event, row in zip(decoder.decode_all(rows), rows)]
        for family, n in project_together(projections, fold, items, partition=partition, through=through).items():
            taken[family] += n
        reached = rows[-1][0] if through is None else through
        for family in positions:
            positions[family] = max(positions[family], reached)
        if progress is not None:
            progress(reached)
        finished = reached >= stop if partition is not None else len(rows) < size
        if finished:  # a partition's rows are filtered: fewer than asked is not the end of its stretch
            return
        elapsed = time.perf_counter() - started
        size = max(batch, min(MAX_BATCH, int(size * min(2.0, BATCH_SECONDS / max(elapsed, 1e-3)))))
