"""gunicorn hooks for metrics from several worker processes (docs/metrics.md), for operators who
run gunicorn instead of the shipped web server (``fleet.web_server``, granian):

    gunicorn -c python:fleet.gunicorn_conf fleet.wsgi:application -b 0.0.0.0:8000 -w 4 ...

- ``on_starting`` (the master, before any worker) empties ``PROMETHEUS_MULTIPROC_DIR``
  (``fleet.metrics_dir``).
- ``child_exit`` tells prometheus_client that a worker is gone, so live-process gauges drop it
  (its counters stay summed in: a count never goes back).

Only these hooks live here; workers, threads and timeouts stay on the command line.
"""

from __future__ import annotations

import os
from typing import Any

from fleet.metrics_dir import MULTIPROC_ENV, empty_multiproc_dir


def on_starting(server: Any) -> None:
    empty_multiproc_dir()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
