"""``scripts/bench_embedded.py``: a new run keeps the notes written under the last one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_embedded  # noqa: E402


def test_the_last_runs_notes_are_carried_over(tmp_path):
    path = tmp_path / "bench-embedded.json"
    path.write_text(json.dumps({"hosts": 5000, "notes": ["**Goal met.** why", 3, "another"]}))
    assert bench_embedded.previous_notes(path) == ["**Goal met.** why", "another"]


def test_no_notes_from_a_missing_or_broken_file(tmp_path):
    assert bench_embedded.previous_notes(tmp_path / "missing.json") == []
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert bench_embedded.previous_notes(broken) == []
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert bench_embedded.previous_notes(listed) == []
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"notes": "one string"}))
    assert bench_embedded.previous_notes(odd) == []


def test_the_recorded_run_renders_its_notes():
    recorded = json.loads(bench_embedded.RESULTS.read_text())
    lines = bench_embedded.report_lines()
    assert recorded["notes"] and all(f"- {note}" in lines for note in recorded["notes"])
