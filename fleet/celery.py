"""Celery application.

In the embedded default (no ``REDIS_URL``) tasks run in-process (``task_always_eager``), so a
fresh machine needs no broker. In production the broker is Redis and a separate worker and beat
run the tasks.

Task outcomes are counted here, from Celery's signals, as ``fleet_celery_tasks_total{task,
outcome}`` (docs/metrics.md). They are counted where the task runs: in the server process in the
embedded default, in the pool's child processes of a worker. A worker started with
``WORKER_METRICS_PORT`` and ``PROMETHEUS_MULTIPROC_DIR`` serves their sum on that port.
"""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client writes there from the first metric created (at start-up, before any hook).
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

app = Celery("fleet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _count(sender: Any, outcome: str) -> None:
    from fleet.metrics import CELERY_TASKS

    name = getattr(sender, "name", sender)
    CELERY_TASKS.labels(name if name in app.tasks else "other", outcome).inc()  # registered names only


@signals.task_success.connect
def _task_succeeded(sender: Any = None, **kwargs: Any) -> None:
    _count(sender, "success")


@signals.task_failure.connect
def _task_failed(sender: Any = None, **kwargs: Any) -> None:
    _count(sender, "failure")


@signals.task_retry.connect
def _task_retried(sender: Any = None, **kwargs: Any) -> None:
    _count(sender, "retry")


@signals.task_postrun.connect
def _task_ended(sender: Any = None, state: str | None = None, **kwargs: Any) -> None:
    # No state: the exception left Celery's tracer unrecorded, and task_failure was not sent. That
    # is how a task fails when it runs in-process with errors propagating to the caller (the
    # embedded default's task_always_eager + task_eager_propagates).
    if state is None:
        _count(sender, "failure")


@signals.task_revoked.connect
def _task_revoked(sender: Any = None, expired: bool = False, **kwargs: Any) -> None:
    _count(sender, "expired" if expired else "revoked")


@signals.worker_init.connect
def _fresh_metrics_dir(**kwargs: Any) -> None:
    """Counts left in the directory by a previous run (a restarted container keeps its emptyDir)
    would be summed in: empty it before the pool starts counting, as the web server does."""
    from fleet.metrics_dir import empty_multiproc_dir

    empty_multiproc_dir()


@signals.worker_ready.connect
def _serve_worker_metrics(**kwargs: Any) -> None:
    from fleet.env import env

    port = env.int("WORKER_METRICS_PORT", default=0)
    if port:
        from fleet.metrics import serve_worker_metrics

        serve_worker_metrics(port)


@signals.worker_process_shutdown.connect
def _pool_process_exited(pid: int | None = None, **kwargs: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
