"""A short seeded run of ``scripts/fuzz.py``: no agent request may get a reply osquery misreads.

The fuzzer starts a server of its own, in the shape this suite runs against: gunicorn + MariaDB
+ Redis when DATABASE_URL/REDIS_URL are set (the MariaDB+Redis CI run), else make run's server process
on SQLite (the embedded default). It uses its own temporary directory, MariaDB database
(``fleet_fuzz_test``) and Redis database index (7; the suite uses 15), so it cannot disturb the
other tests. docs/fuzzing.md explains the classes it counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 3000
SEED = 20261204


@pytest.mark.slow
def test_short_fuzz_finds_no_defect(tmp_path):
    production = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
    summary_file = tmp_path / "summary.json"
    command = [
        sys.executable, str(ROOT / "scripts" / "fuzz.py"),
        "--shape", "production" if production else "embedded",
        "--requests", str(REQUESTS), "--seed", str(SEED), "--concurrency", "6", "--hosts", "10",
        "--max-seconds", "100", "--mysql-db", "fleet_fuzz_test", "--redis-db", "7",
        "--tmp-dir", str(tmp_path / "server"), "--json", str(summary_file),
    ]  # fmt: skip
    try:
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=160)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzzer did not finish within 160 s:\n{str(exc.stdout)[-3000:]}")
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"fuzz defects {summary.get('defects')}:\n{report}"
    assert summary["requests_sent"] == REQUESTS, report
