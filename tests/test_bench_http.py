"""bench/http.py still runs (tiny size; no timing is asserted, only that it reports ratios)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_http_benchmark_runs_and_reports_a_ratio(pg_url):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "http.py"), "20", "--clients", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ratio") == 4
