"""A pytest plugin for the MariaDB+Redis run with several workers: each gets a Redis database of its own.

The suite empties the cache between tests, which on Redis empties the whole database index that
``REDIS_URL`` names: two pytest-xdist workers sharing it would wipe each other's node keys, live
queries and channel layer in the middle of a test. Loaded early (``-p tests.redis_per_worker``,
before pytest-django reads the settings), it moves each worker to an index of its own: the first
keeps ``REDIS_URL``'s, the others take 9, 8, 7 (clear of the spare indexes the multi-process tests
lock, 10-14). MariaDB needs nothing: pytest-django already gives each worker its own test database.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

OTHER_WORKERS_DBS = (9, 8, 7)


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` with the database index of pytest-xdist's ``worker`` (``gw0``, ``gw1``...)."""
    number = int(worker.removeprefix("gw") or 0)
    if number == 0:
        return url
    if number > len(OTHER_WORKERS_DBS):
        raise RuntimeError(f"redis_per_worker: at most {len(OTHER_WORKERS_DBS) + 1} workers")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{OTHER_WORKERS_DBS[number - 1]}"))


_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"], _worker)
