"""Pacing how fast a web process hands live queries out to the hosts that check in.

A live query on every host is a burst: each host gets it at its next ``distributed/read``, so
every host answers within one check-in interval. At 7,500 hosts on a 10 s interval that is 750
``distributed/write`` answers a second for 10 s on top of the steady mix, each about four times
a check-in's CPU (its INSERT and the live-query store's round trips; ``make bench``); one web
core cannot absorb it, requests queue in the server, and every agent request, not only the
answers, waits (docs/benchmarks.md, the load report). Spread over a longer time the same answers
cost the same CPU and fit.

So each process hands out at most ``LIVE_QUERY_HANDOUT_RATE`` live queries a second, a token
bucket holding one second's worth: a host that checks in when the bucket is empty gets its
detail and label queries as usual and the live query at a later check-in. A fleet that
checks in more slowly than the rate (at the default 200 and a 10 s interval, up to about 2,000
hosts per web process) never meets the limit and sees no change. A large one sees its live
query complete in about ``hosts / (rate x processes)`` seconds instead of one interval, with the
server's latency held meanwhile. The bucket is per process on purpose: the limit is what one
process's core absorbs, so adding web processes raises it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache

from django.conf import settings

from fleet.metrics import LIVE_QUERY_HANDOUTS_DEFERRED


class HandoutPacer:
    """A token bucket: ``rate`` hand-outs a second, at most one second's worth at once.

    A rate of 0 or less means no limit. ``clock`` is injectable for tests.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate if rate > 0 else 0.0
        self.capacity = max(1.0, self.rate)
        self._clock = clock
        self._tokens = self.capacity
        self._refilled_at = clock()
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        """How many of ``wanted`` live queries may go out now (the rest wait for a later check-in)."""
        if not self.rate or wanted <= 0:
            return wanted
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._refilled_at)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            self._refilled_at = now
            granted = min(wanted, int(self._tokens))
            self._tokens -= granted
        if granted < wanted:
            LIVE_QUERY_HANDOUTS_DEFERRED.inc(wanted - granted)
        return granted


@cache
def get_pacer() -> HandoutPacer:
    """The process's pacer, at the configured rate (cached; tests call ``get_pacer.cache_clear``)."""
    return HandoutPacer(settings.LIVE_QUERY["HANDOUT_RATE"])


def paced(live: dict[int, str]) -> dict[int, str]:
    """The live queries (campaign id -> SQL) this check-in hands out: the oldest campaigns first,
    as many as the pacer allows now."""
    if not live:
        return live
    granted = get_pacer().take(len(live))
    if granted >= len(live):
        return live
    return {campaign_id: live[campaign_id] for campaign_id in sorted(live)[:granted]}
