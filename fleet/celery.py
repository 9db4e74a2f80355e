"""Celery application.

In the embedded default (no ``REDIS_URL``) tasks run in-process (``task_always_eager``), so a
fresh machine needs no broker. In production the broker is Redis and a separate worker and beat
run the tasks.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")

app = Celery("fleet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
