"""gunicorn hooks for metrics from several worker processes (docs/metrics.md).

    gunicorn -c python:fleet.gunicorn_conf fleet.wsgi:application -b 0.0.0.0:8000 -w 4 ...

With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its counts to files in that directory
and ``/metrics`` sums them, so a scrape sees the whole server whichever worker answers it.

- ``on_starting`` (the master, before any worker) empties the directory: files left by a
  previous run would otherwise be summed in, and their processes' gauges kept forever.
- ``child_exit`` tells prometheus_client that a worker is gone, so the live-process gauges drop
  it (its counters stay summed in: a count never goes back).

Only these hooks live here; workers, threads and timeouts stay on the command line.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def on_starting(server: Any) -> None:
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
