"""`replay rebuild`: progress reported up to the head, and a progress bar on a terminal."""

from __future__ import annotations

import io
import sys

from adapters.replay_cli import progress_bar
from adapters.settings import eventsourcing_env
from projections.runner import Projections
from replay.rebuild import rebuild
from tests.support import forms_on


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rebuild_reports_progress_to_the_head_and_verifies_every_read_model(book, db_url, monkeypatch):
    b = forms_on(book, "pro")
    b.at("2026-04-11T00:00:00").do("ws", "change-plan", plan="team")
    b.at("2026-06-02T00:00:00")
    with Projections(eventsourcing_env(db_url), source=b.ledger, batch=4) as p:
        p.catch_up()
        seen: dict[str, list[int]] = {}
        report = rebuild(p, verify=True, progress=lambda family, at: seen.setdefault(family, []).append(at))
        head = p.head()
        assert report["ok"] and set(report["verify"]) == set(p.models)
        assert all(at == sorted(at) and at[-1] == head for at in seen.values()) and len(seen["plan_state"]) > 2
        screen = Terminal()
        monkeypatch.setattr(sys, "stderr", screen)
        with progress_bar(head, ["journal"]) as advance:
            rebuild(p, ["journal"], progress=advance)
        assert "journal" in screen.getvalue() and "events/s" in screen.getvalue()


def test_a_process_that_keeps_its_read_models_open_follows_another_ones_rebuild(book, db_url):
    """A follower or a server runs for days: another process's rebuild swaps the views and drops
    the tables it was projecting into; its next catch-up and status move to the new ones."""
    from projections.plan_state import read_plan_state

    b = forms_on(book, "pro")
    env = eventsourcing_env(db_url)
    with Projections(env, source=b.ledger) as server, Projections(env, source=b.ledger) as operator:
        server.catch_up()
        old = type(server.running["plan_state"]).tag
        operator.rebuild()
        b.at("2026-04-11T00:00:00").do("ws", "change-plan", plan="team")
        assert server.catch_up()["plan_state"] > 0
        assert type(server.running["plan_state"]).tag != old
        assert all(row["lag"] == 0 for row in server.status())
        with server.engine.connect() as conn:
            assert read_plan_state(conn, "ws")["plan"] == "team"


def test_a_table_set_left_by_a_swap_killed_before_its_drop_goes_with_the_next_swap(book, db_url):
    """The swap commits, then the old tables are dropped in a transaction of their own: a kill in
    between left a whole copy of the read model behind for good."""
    from sqlalchemy import inspect

    from projections.runner import attach

    b = forms_on(book, "pro")
    env = eventsourcing_env(db_url)
    with Projections(env, source=b.ledger) as p:
        p.catch_up()
        p.rebuild(["plan_state"])
        live = type(p.running["plan_state"]).tag
        attach(env, b.ledger, p.models["plan_state"], "v1", p.fold, create=True, datastore=p.datastore)  # left over
        leftover = set(inspect(p.engine).get_table_names())
        assert {"rm_plan_state_v1", "rm_plan_state_v1_tracking"} <= leftover and live != "v1"
        p.rebuild(["plan_state"])
        names = set(inspect(p.engine).get_table_names())
        assert not {"rm_plan_state_v1", "rm_plan_state_v1_tracking", f"rm_plan_state_{live}"} & names
        assert f"rm_plan_state_{type(p.running['plan_state']).tag}" in names


def test_a_catch_up_retries_on_the_new_tables_when_another_thread_followed_the_swap_first(book, db_url, monkeypatch):
    """A server's threads share one Projections: the one that moves to the new tables may not be
    the one whose batch failed on the dropped old ones; that batch is run again all the same."""
    import projections.runner as runner

    b = forms_on(book, "pro")
    env = eventsourcing_env(db_url)
    real = runner.catch_up
    with Projections(env, source=b.ledger) as server, Projections(env, source=b.ledger) as operator:
        server.catch_up()

        def swapped_meanwhile(*args, **kwargs):
            monkeypatch.setattr(runner, "catch_up", real)
            operator.rebuild()
            server.follow_registry()  # another request's thread
            return real(*args, **kwargs)  # this batch: on the tables it picked before, now dropped

        monkeypatch.setattr(runner, "catch_up", swapped_meanwhile)
        b.at("2026-04-11T00:00:00").do("ws", "change-plan", plan="team")
        server.catch_up()  # raised when this thread's retry looked only at its own follow
        assert all(row["lag"] == 0 for row in server.status())


def test_many_threads_follow_a_swap_at_once_without_running_out_of_connections(book, db_url):
    """A server's request threads all meet the swap: each waits for the one that moves, holding
    no pooled connection meanwhile (it needs one to set the new tables up)."""
    import threading

    b = forms_on(book, "pro")
    env = eventsourcing_env(db_url)
    errors: list[BaseException] = []
    with Projections(env, source=b.ledger) as server, Projections(env, source=b.ledger) as operator:
        server.catch_up()
        operator.rebuild()
        start = threading.Barrier(30)

        def follow() -> None:
            start.wait()
            try:
                server.follow_registry()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=follow) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and server.moved() == []
