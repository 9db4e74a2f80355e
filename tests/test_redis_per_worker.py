"""Each xdist worker of the MariaDB+Redis run gets a Redis database of its own (tests/redis_per_worker.py)."""

from __future__ import annotations

import os
import sys

import pytest

from tests.redis_per_worker import OTHER_WORKERS_DBS, worker_redis_url
from tests.test_campaign_multiprocess import SPARE_REDIS_DBS


def test_the_first_worker_keeps_the_suites_database_and_the_others_get_their_own():
    url = "redis://127.0.0.1:6379/15"
    assert worker_redis_url(url, "gw0") == url
    assert worker_redis_url(url, "gw1") == "redis://127.0.0.1:6379/9"
    assert worker_redis_url("redis://:pw@redis:6380/15", "gw3") == "redis://:pw@redis:6380/7"
    with pytest.raises(RuntimeError):
        worker_redis_url(url, "gw4")


def test_no_worker_database_is_one_the_multi_process_tests_lock():
    assert not set(OTHER_WORKERS_DBS) & set(SPARE_REDIS_DBS) and 15 not in SPARE_REDIS_DBS


def test_a_later_worker_runs_on_its_own_database(settings):
    """In the CI run (plugin loaded, two workers), the second worker's settings name its own index."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if "tests.redis_per_worker" not in sys.modules or not settings.REDIS_URL or worker in ("", "gw0"):
        pytest.skip("only in a later worker of a run with -p tests.redis_per_worker and REDIS_URL")
    index = OTHER_WORKERS_DBS[int(worker.removeprefix("gw")) - 1]
    assert settings.REDIS_URL.endswith(f"/{index}")
    assert settings.CACHES["default"]["LOCATION"].endswith(f"/{index}")
