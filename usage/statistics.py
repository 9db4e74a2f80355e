"""The usage statistics payload: what is sent, field for field (docs/usage-statistics.md).

The fields and their names are Fleet's (``server/fleet/statistics.go``, camelCase), plus a few of
this server's own (live queries, scripts, task agents). Everything is a count, a version string or
a yes/no: no hostname, serial, address, email, user or organisation name, query text or URL ever
enters it. The anonymous identifier is a random UUID made once for the installation.

Cost: one ``COUNT`` or ``GROUP BY`` per field, about twenty queries whatever the fleet's size. The
host breakdowns read the host table once each (a scan: 100,000 hosts is a fraction of a second, once
a day, off the request path); the weekly counts read only the last seven days through the
``created_at`` / ``seen_time`` / ``last_login`` columns. Each breakdown keeps its ``MAX_GROUPS``
largest groups, so a fleet reporting odd values cannot make the payload grow without bound.
"""

from __future__ import annotations

import functools
import importlib.metadata
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, F
from django.utils import timezone

WEEK = timedelta(days=7)
MAX_GROUPS = 500  # per breakdown: the most common values; hosts beyond stay in numHostsEnrolled
LOG_DESTINATIONS = ("filesystem", "stdout", "webhook", "nats")  # names only, never their addresses


@functools.cache
def fleet_version() -> str:
    """This server's version: the installed package's, else pyproject.toml's."""
    try:
        return importlib.metadata.version("fleet-django")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        pyproject = Path(settings.BASE_DIR) / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def build(now: datetime | None = None) -> dict[str, Any]:
    """The payload as it would be sent now."""
    from campaigns.models import Campaign
    from hosts.models import FleetSettings, Host, Label, Team
    from hostscripts.models import ScriptKind, ScriptRun
    from packs.models import Pack
    from queries.models import Query
    from software.models import SoftwareTitle
    from taskserver.models import Task, TaskAgent
    from usage.models import UsageStatistics

    now = now or timezone.now()
    week_ago = now - WEEK
    users = get_user_model().objects.filter(is_active=True)
    logging_conf = settings.OSQUERY_LOGGING
    return {
        "anonymousIdentifier": str(UsageStatistics.load().anonymous_identifier),
        "fleetVersion": fleet_version(),
        "numHostsEnrolled": Host.objects.count(),
        "hostsEnrolledByOperatingSystem": hosts_by_operating_system(),
        "hostsEnrolledByOsqueryVersion": [
            {"osqueryVersion": value, "numHosts": n} for value, n in _grouped("osquery_version")
        ],
        "hostsEnrolledByOrbitVersion": [
            {"orbitVersion": value, "numHosts": n} for value, n in _grouped("orbit_version")
        ],
        "numHostsNotResponding": hosts_not_responding(now),
        "numHostsFleetDesktopEnabled": Host.objects.exclude(desktop_version="").count(),
        "numUsers": users.count(),
        "numWeeklyActiveUsers": users.filter(last_login__gte=week_ago).count(),
        "numTeams": Team.objects.count(),
        "numLabels": Label.objects.count(),
        "numQueries": Query.objects.count(),
        "numPacks": Pack.objects.count(),
        "numLiveQueriesRun": Campaign.objects.filter(created_at__gte=week_ago).count(),
        "numScriptsRun": ScriptRun.objects.filter(kind=ScriptKind.SCRIPT, created_at__gte=week_ago).count(),
        "numSoftwareTitles": SoftwareTitle.objects.count(),
        "numTaskAgents": TaskAgent.objects.count(),
        "numTasks": Task.objects.filter(enabled=True).count(),
        # Features in use
        "softwareInventoryEnabled": True,  # always collected by this server (Fleet: a switch)
        "MDMEnabledAndConfigured": mdm_configured(),
        "scriptsDisabled": FleetSettings.load().scripts_disabled,
        "queryReportsDisabled": bool(logging_conf["QUERY_REPORTS_DISABLED"]),
        "resultLogDestinations": _destinations(logging_conf["RESULT_PLUGINS"]),
        "statusLogDestinations": _destinations(logging_conf["STATUS_PLUGINS"]),
        "auditLogEnabled": bool(settings.ACTIVITY_AUDIT_LOG["ENABLED"]),
        "agentUpdatesConfigured": agent_updates_configured(),
    }


def _grouped(column: str) -> list[tuple[str, int]]:
    """``(value, hosts)`` for the ``MAX_GROUPS`` most common non-empty values of a host column."""
    from hosts.models import Host

    rows = (
        Host.objects.exclude(**{column: ""})
        .values_list(column)
        .annotate(n=Count("id"))
        .order_by("-n", column)[:MAX_GROUPS]
    )
    return [(value, n) for value, n in rows]


def hosts_by_operating_system() -> dict[str, list[dict[str, Any]]]:
    """Fleet's ``{platform: [{version, numEnrolled}]}``, platforms by name, versions most common
    first (hosts that have not reported their platform yet are left out)."""
    from hosts.models import Host

    rows = (
        Host.objects.exclude(platform="")
        .values_list("platform", "os_version")
        .annotate(n=Count("id"))
        .order_by("-n", "platform", "os_version")[:MAX_GROUPS]
    )
    by_platform: dict[str, list[dict[str, Any]]] = {}
    for platform, version, n in rows:
        by_platform.setdefault(platform, []).append({"version": version, "numEnrolled": n})
    return dict(sorted(by_platform.items()))


def hosts_not_responding(now: datetime) -> int:
    """Fleet's definition: hosts seen in the last week whose details are older than twice the
    detail interval at their last check-in (they check in but never complete distributed/write)."""
    from hosts.models import HostSeenTime

    stale = timedelta(seconds=2 * settings.OSQUERY["DETAIL_UPDATE_INTERVAL"])
    return HostSeenTime.objects.filter(
        seen_time__gte=now - WEEK, host__detail_updated_at__lt=F("seen_time") - stale
    ).count()


def mdm_configured() -> bool:
    """Fleet's ``MDMEnabledAndConfigured``: the MDM CA is set up and a real APNs certificate (not
    the ``mdm setup --dev`` stand-in) is uploaded."""
    from mdm import conf
    from mdm.models import PushCertificate

    if not conf.configured():
        return False
    return PushCertificate.objects.filter(is_dev=False).exclude(certificate_pem="").exists()


def agent_updates_configured() -> bool:
    """A TUF repository is served at /tuf/ (initialised here, or a bucket it redirects to)."""
    from updates.repository import UpdateRepository

    if settings.AGENT_UPDATES["BASE_URL"]:
        return True
    return UpdateRepository.from_settings().is_initialised()


def _destinations(plugins: Any) -> list[str]:
    """The destinations' kinds, never their addresses (an unknown name is left out)."""
    return sorted({str(p).strip().lower() for p in plugins} & set(LOG_DESTINATIONS))
