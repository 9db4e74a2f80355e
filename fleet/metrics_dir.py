"""The multiprocess metrics directory's upkeep, shared by the web servers' start-up hooks.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its counts to files in that
directory and ``/metrics`` sums them (docs/metrics.md). This module imports nothing of Django or
prometheus_client at load: the servers' master processes call it before any worker exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def empty_multiproc_dir() -> None:
    """Empty the directory before the workers start: files left by a previous run would otherwise
    be summed in, and their processes' gauges kept forever."""
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
