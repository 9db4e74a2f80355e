"""The long fuzz runs kept for docs/benchmarks.md: ``fuzz.py --record`` writes, ``bench.py`` reads.

``docs/benchmarks.md`` is rewritten whole by each ``make bench``; the fuzzer's figures come from
separate, longer runs, so they are kept in ``docs/fuzz-results.json`` (one entry per shape, the
latest) and rendered into that page's "Fuzzing" section each time it is written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "fuzz-results.json"


def record(summary: dict[str, Any], path: Path = RESULTS) -> None:
    """Keep this run's figures as the latest for its shape."""
    kept = json.loads(path.read_text()) if path.exists() else {}
    memory = summary.get("memory") or {}
    kept[summary["shape"]] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "requests": summary["requests_sent"],
        "seed": summary["seed"],
        "seconds": round(summary["seconds"], 1),
        "classes": summary["classes"],
        "defects": summary["defects"],
        "rss_mib_after_warmup": memory.get("rss_mib_at_warmup_end"),
        "rss_mib_at_end": memory.get("rss_mib_at_end"),
        "rss_mib_peak": memory.get("rss_mib_peak"),
        "rss_mib_by_progress": memory.get("rss_mib_by_progress"),
        "log_bytes_per_1000": (summary.get("log") or {}).get("bytes_per_1000_requests"),
        "forged_log_lines": (summary.get("log") or {}).get("forged_lines"),
        "live_rows_dropped": len((summary.get("live_rows") or {}).get("dropped") or []),
        "web_server": summary.get("web_server"),
    }
    path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")


def report_lines(path: Path = RESULTS) -> list[str]:
    """The "Fuzzing" section of docs/benchmarks.md."""
    lines = ["## Fuzzing (`make fuzz`)", ""]
    if not path.exists():
        return [*lines, "No long run recorded yet (`scripts/fuzz.py --record`).", ""]
    kept = json.loads(path.read_text())
    lines += [
        "| shape | date | requests (seed) | s | ok | expected errors | defects | RSS after warm-up -> end "
        "(peak), MiB | log bytes / 1000 req | forged log lines |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for shape, run in sorted(kept.items()):
        defects = sum(run["defects"].values()) if run["defects"] else 0
        lines.append(
            f"| {shape} | {run['date']} | {run['requests']:,} ({run['seed']}) | {run['seconds']:g} "
            f"| {run['classes'].get('ok', 0):,} | {run['classes'].get('expected-error', 0):,} | {defects} "
            f"| {run['rss_mib_after_warmup']} -> {run['rss_mib_at_end']} ({run['rss_mib_peak']}) "
            f"| {run['log_bytes_per_1000']} | {run['forged_log_lines']} |"
        )
    production = "granian (2 worker processes, one request thread each)"
    if "production" in kept and kept["production"].get("web_server") != "granian":
        production = "gunicorn (2 sync workers; recorded before granian)"  # an older run
    lines += [
        "",
        f"*production*: {production}, MariaDB, Redis; *embedded*: `make run`'s one "
        "server process (uvicorn, Django through its WSGI handler) on SQLite. Defects are replies "
        "osquery would misread (5xx, non-JSON, an error "
        "without `error`, `node_invalid` outside a 401, a valid check-in refused, an MDM endpoint "
        "accepting a message no enrolled device signed), dropped connections, "
        "timeouts, forged log lines, live-query rows accepted but not stored, and memory growth after "
        "warm-up (over 15 % or 50 MiB). Recorded with `scripts/fuzz.py --shape S --requests N "
        "--record`; see [fuzzing.md](fuzzing.md).",
        "",
    ]
    return lines
