"""CLI start-up: the import time (`python -X importtime`, summed over top-level imports) and the
wall time of `subledger --help` and `subledger show WS`, beside baselines measured in the same
run: `python -c pass` and `python -c "import typer"`. Prints the median of several runs and
ratios to `import typer` (what any typer CLI pays).

    .venv/bin/python bench/cli.py [RUNS] [--db postgresql://user@host:port/db] [--before CHECKOUT]

`--before /work/main` also measures another checkout's code (imported ahead of this one), for
a before/after in the same run.

`show` runs on a SQLite file and on PostgreSQL (--db, else $SUBLEDGER_DB if it is a PostgreSQL
URL, else the local server's `test` database), each holding one workspace; the PostgreSQL run
works in a schema of its own, dropped after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402 (stdlib only)

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CLI = "import sys; from adapters.cli import main; sys.argv[0] = 'subledger'; main()"


def measure(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(import seconds, wall seconds) of one `python -X importtime -c code args...`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{code} {args}: exit {done.returncode}\n{done.stderr[-2000:]}")
    total = 0
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if cumulative.strip().isdigit() and not name.startswith("  "):  # top level: one space
                total += int(cumulative)
    return total / 1e6, wall


Spec = tuple[str, str, tuple[str, ...], dict[str, str]]


def medians(specs: list[Spec], runs: int) -> list[tuple[str, tuple[float, float]]]:
    """Each spec measured `runs` times, the specs taking turns, so that a change in the machine's
    load falls on all of them alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in specs}
    for _ in range(runs):
        for name, code, args, env in specs:
            samples[name].append(measure(code, *args, env=env))
    return [(name, (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got)))
            for name, got in samples.items()]


def seed(url: str, cli: str = CLI) -> None:
    subprocess.run([sys.executable, "-c", cli, "--db", url, "--json", "add-payment-method", "ws1",
                    "--payment-method", "pm_card_visa"], check=True, capture_output=True,
                   env={**os.environ, "SUBLEDGER_TEST_CLOCK": "2026-01-01T00:00:00Z"}, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description="CLI import time as ratios of `import typer`.")
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: $SUBLEDGER_DB or the local test db)")
    parser.add_argument("--before", default=None, help="another checkout to measure too (e.g. /work/main)")
    args = parser.parse_args()
    runs = args.runs
    pg = benchlib.postgres_base(args.db)
    schemas: list[str] = []
    specs: list[Spec] = []
    clock = {"SUBLEDGER_TEST_CLOCK": "2026-01-01T00:00:00Z"}
    checkouts = [("", CLI)]
    if args.before:
        first = str(Path(args.before).resolve())
        checkouts.append((f" [{args.before}]", f"import sys; sys.path.insert(0, {first!r}); {CLI}"))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            specs += [("python -c pass", "pass", (), {}), ("python -c 'import typer'", "import typer", (), {})]
            for n, (label, cli) in enumerate(checkouts):
                schemas.append(f"bench_{uuid.uuid4().hex[:8]}")
                sqlite_url, pg_url = f"sqlite:///{tmp}/cli{n}.db", f"{pg}?schema={schemas[-1]}"
                seed(sqlite_url, cli)
                seed(pg_url, cli)
                specs += [(f"subledger --help{label}", cli, ("--help",), {}),
                          (f"subledger --json show ws1 (SQLite){label}", cli,
                           ("--db", sqlite_url, "--json", "show", "ws1"), clock),
                          (f"subledger show ws1 (SQLite, rich table){label}", cli,
                           ("--db", sqlite_url, "show", "ws1"), clock),
                          (f"subledger --json show ws1 (PostgreSQL){label}", cli,
                           ("--db", pg_url, "--json", "show", "ws1"), clock)]
            rows = medians(specs, runs)
        finally:
            import psycopg

            with psycopg.connect(pg, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    typer_imports = rows[1][1][0]
    print(f"median of {runs} runs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':56} {'imports':>8} {'wall':>8}  imports/typer's")
    for name, (imports, wall) in rows:
        print(f"{name:56} {imports:7.3f}s {wall:7.3f}s  ratio {imports / typer_imports:5.2f}")


if __name__ == "__main__":
    main()
