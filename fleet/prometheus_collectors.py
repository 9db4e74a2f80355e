"""State gauges read from the database when ``/metrics`` is scraped (docs/metrics.md).

They hold the same values in every server process, so they are right with any number of
processes. Each is one grouped query whatever the fleet's size. The host and script-run counts
read their whole table (about 0.2 s each on MariaDB at 100,000 hosts and 300,000 runs), so their
results are kept in the shared cache for ``METRICS_STATE_CACHE_SECONDS`` (30 s): servers and
Prometheus replicas scraping together cost one computation per period. The other two use an
index and are read on every scrape.

- hosts by status and platform: one ``GROUP BY platform, platform_like`` over ``Host`` joined to
  its seen time, with conditional counts, as the console's dashboard does (``hosts.dashboard``);
  online is ``HostSeenTime.offline_after >= now``, the project's rule (``hosts.status``);
- active live-query campaigns: the ``(status, created_at)`` index;
- script runs and device actions (lock, unlock, wipe) by state: one ``GROUP BY kind, state``;
- task-agent sessions: online, recently heard-from agents by team (``taskagent_team_online``).

Every server behind a load balancer exports the same state, so dashboards aggregate these with
``max``, never ``sum``. A query that fails costs its own metrics for that scrape, not the scrape.

In multiprocess mode :class:`LiveProcessesCollector` stands in for prometheus_client's process
collector, which sees only the process that happens to answer the scrape.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Case, CharField, Count, Q, Value, When
from django.utils import timezone
from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

# Platform families (hosts.details.platform_family) exported as themselves; any other value an
# agent reports is "other", so a hostile agent cannot add series.
PLATFORMS = ("darwin", "windows", "linux", "chrome", "freebsd", "ios", "ipados", "android")


def platform_label(platform: str, platform_like: str) -> str:
    from hosts.details import platform_family

    if not platform:
        return "unknown"
    family = platform_family(platform, platform_like)
    return family if family in PLATFORMS else "other"


class _DatabaseCollector:
    """Reads at scrape time; a database error is logged and costs only this collector's metrics."""

    what = ""
    cached = False  # kept in the shared cache for METRICS_STATE_CACHE_SECONDS (the costly ones)

    def describe(self) -> list[Metric]:
        return list(self.families({}))  # names and types, no samples: no query at registration

    def collect(self) -> Iterator[Metric]:
        ttl = float(getattr(settings, "METRICS_STATE_CACHE_SECONDS", 30.0)) if self.cached else 0.0
        key = f"metrics:state:v1:{type(self).__name__}"
        data = cache.get(key) if ttl > 0 else None
        if data is None:
            try:
                data = self.read()
            except Exception:
                logger.warning("%s could not be read for /metrics", self.what, exc_info=True)
                return
            if ttl > 0:
                cache.set(key, data, ttl)
        yield from self.families(data)

    def read(self) -> Any:
        raise NotImplementedError

    def families(self, data: Any) -> Iterable[Metric]:
        raise NotImplementedError


class HostsCollector(_DatabaseCollector):
    what = "host counts"
    cached = True

    def read(self) -> dict[str, Counter[str]]:
        from hosts.models import Host
        from hosts.status import MISSING_AFTER, NEW_FOR

        now = timezone.now()
        rows = (
            Host.objects.order_by()
            .values_list("platform", "platform_like")
            .annotate(
                total=Count("id"),
                online=Count("id", filter=Q(seen__offline_after__gte=now)),
                missing=Count("id", filter=Q(seen__seen_time__lt=now - MISSING_AFTER)),
                new=Count("id", filter=Q(created_at__gte=now - NEW_FOR)),
            )
        )
        counts: dict[str, Counter[str]] = {k: Counter() for k in ("online", "offline", "missing", "new")}
        for platform, platform_like, total, online, missing, new in rows:
            label = platform_label(platform, platform_like)
            counts["online"][label] += online
            counts["offline"][label] += total - online
            counts["missing"][label] += missing
            counts["new"][label] += new
        return counts

    def families(self, data: dict[str, Counter[str]]) -> Iterator[Metric]:
        hosts = GaugeMetricFamily(
            "fleet_hosts",
            "Enrolled hosts by status (online, offline: each host is one of the two) and platform.",
            labels=["status", "platform"],
        )
        missing = GaugeMetricFamily(
            "fleet_hosts_missing",
            "Hosts not seen for 30 days (offline ones), by platform.",
            labels=["platform"],
        )
        new = GaugeMetricFamily(
            "fleet_hosts_new", "Hosts enrolled within the last 24 hours, by platform.", labels=["platform"]
        )
        for status in ("online", "offline"):
            for platform, n in sorted(data.get(status, {}).items()):
                hosts.add_metric([status, platform], n)
        for family, key in ((missing, "missing"), (new, "new")):
            for platform, n in sorted(data.get(key, {}).items()):
                family.add_metric([platform], n)
        yield from (hosts, missing, new)


class CampaignsCollector(_DatabaseCollector):
    what = "active campaigns"

    def read(self) -> dict[str, int]:
        from campaigns.models import ACTIVE_STATUSES, Campaign

        found = dict(
            Campaign.objects.filter(status__in=ACTIVE_STATUSES)
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
        )
        return {str(status): found.get(status, 0) for status in ACTIVE_STATUSES}

    def families(self, data: dict[str, int]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "fleet_live_query_campaigns_active",
            "Live-query campaigns not ended yet, by status (waiting: no answer yet; running).",
            labels=["status"],
        )
        for status, n in data.items():
            family.add_metric([status], n)
        yield family


class ScriptRunsCollector(_DatabaseCollector):
    what = "script runs"
    cached = True

    def read(self) -> dict[tuple[str, str], int]:
        from hostscripts.models import RunStatus, ScriptRun

        state = Case(
            When(cancelled=True, then=Value(RunStatus.CANCELLED.value)),
            When(exit_code__isnull=True, then=Value(RunStatus.PENDING.value)),
            When(exit_code=0, then=Value(RunStatus.RAN.value)),
            default=Value(RunStatus.ERROR.value),
            output_field=CharField(),
        )
        rows = ScriptRun.objects.order_by().annotate(state=state).values_list("kind", "state")
        rows = rows.annotate(n=Count("id"))  # GROUP BY kind, state
        found: dict[tuple[str, str], int] = {}
        for kind, run_state, n in rows:
            found[(kind, run_state)] = found.get((kind, run_state), 0) + n
        return found

    def families(self, data: dict[tuple[str, str], int]) -> Iterator[Metric]:
        from hostscripts.models import RunStatus, ScriptKind

        scripts = GaugeMetricFamily(
            "fleet_script_runs",
            "Script runs (saved and ad-hoc scripts) by state: pending, ran, error, cancelled.",
            labels=["state"],
        )
        actions = GaugeMetricFamily(
            "fleet_device_actions",
            "Lock, unlock and wipe runs by action and state: pending, ran, error, cancelled.",
            labels=["action", "state"],
        )
        for state in RunStatus.values:
            scripts.add_metric([state], data.get((ScriptKind.SCRIPT.value, state), 0))
        for action in (ScriptKind.LOCK, ScriptKind.UNLOCK, ScriptKind.WIPE):
            for state in RunStatus.values:
                actions.add_metric([action.value, state], data.get((action.value, state), 0))
        yield from (scripts, actions)


class TaskAgentSessionsCollector(_DatabaseCollector):
    what = "task-agent sessions"

    def read(self) -> dict[str, int]:
        from taskserver.models import TaskAgent

        heard_since = timezone.now() - timedelta(seconds=settings.TASKSERVER["STALE_AFTER"])
        rows = (
            TaskAgent.objects.filter(online=True, last_seen_at__gte=heard_since)
            .order_by()
            .values_list("team__name")
            .annotate(n=Count("id"))
        )
        found = {"": 0}  # global agents always have a sample, so "none connected" reads 0
        for team, n in rows:
            found[team or ""] = n
        return found

    def families(self, data: dict[str, int]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "fleet_taskserver_sessions",
            "Task agents connected now, by team (empty: global agents).",
            labels=["team"],
        )
        for team, n in sorted(data.items()):
            family.add_metric([team], n)
        yield family


def state_collectors() -> list[_DatabaseCollector]:
    return [HostsCollector(), CampaignsCollector(), ScriptRunsCollector(), TaskAgentSessionsCollector()]


# --- processes (multiprocess mode) -----------------------------------------------------------------

_PID = re.compile(r"_(\d+)\.db$")


class LiveProcessesCollector:
    """``process_*`` (CPU, memory, file descriptors, start time) of each live process that writes
    to the multiprocess directory, labelled ``pid``: a sum across workers would drop when one
    exits and read as a counter reset, a series per process does not. Linux only (``/proc``)."""

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.path, self.proc = path, proc

    def pids(self) -> list[int]:
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        found = {int(m.group(1)) for name in names if (m := _PID.search(name))}
        return sorted(pid for pid in found if os.path.exists(os.path.join(self.proc, str(pid))))

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            reader: Callable[[], int] = lambda pid=pid: pid  # noqa: E731
            for family in ProcessCollector(pid=reader, proc=self.proc, registry=None).collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()
