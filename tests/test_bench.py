"""The benchmarks still run (tiny sizes; no timing is asserted, only that they report ratios)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.parametrize(("script", "size"), [("commands.py", "20"), ("projections.py", "200"), ("replay.py", "200")])
def test_benchmark_runs_and_reports_a_ratio(script, size, pg_url):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), size], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout
