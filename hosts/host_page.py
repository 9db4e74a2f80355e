"""The host page: what an IT admin wants to know about one computer, read like Fleet's.

Not an edit form: agents own a host's vitals. The page groups them with human labels and
formats, and gathers what reaches the host (labels, packs and scheduled queries as its served
config has them), what it reported (query reports, software) and what was asked of it (live
queries), each a bounded, indexed query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from hosts.choices import HostStatus
from hosts.models import Host
from hosts.status import NEW_FOR, status_of

RECENT_LIVE_QUERIES = 20
REPORTS_SHOWN = 50
SOFTWARE_SHOWN = 500
ACTIVITIES_SHOWN = 20
SCRIPT_RUNS_SHOWN = 20


@dataclass(frozen=True)
class Vital:
    label: str
    value: Any
    kind: str = "text"  # text, code, time (a datetime shown with "ago"), empty


def _bytes(value: int) -> str:
    if value <= 0:
        return ""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} bytes"


def duration(seconds: int) -> str:
    """``93784`` -> ``"1 day, 2 hours"``: two units are enough to read an uptime."""
    if seconds <= 0:
        return ""
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
        if len(parts) == 2:
            break
    return ", ".join(parts)


def _interval(seconds: int) -> str:
    return f"every {duration(seconds)}" if seconds else ""


def _cores(physical: int, logical: int) -> str:
    if not (physical or logical):
        return ""
    if physical and logical and physical != logical:
        return f"{physical} cores, {logical} threads"
    return f"{physical or logical} cores"


def _when(moment: datetime | None) -> datetime | None:
    if moment is None or moment.year < 2000:  # NEVER, the "not yet" placeholder
        return None
    return moment


def vitals(host: Host) -> list[tuple[str, list[Vital]]]:
    """The host's vitals in named groups, each value formatted for people (empty ones dropped)."""
    seen = getattr(host, "seen", None)
    groups: list[tuple[str, list[Vital]]] = [
        (
            "Identity",
            [
                Vital("Name", host.display_name),
                Vital("Hostname", host.hostname),
                Vital("Serial number", host.hardware_serial, "code"),
                Vital("UUID", host.uuid, "code"),
                Vital("osquery host ID", host.osquery_host_id, "code"),
            ],
        ),
        (
            "Operating system",
            [
                Vital("OS", host.os_version),
                Vital("Platform", host.platform),
                Vital("Build", host.build),
                Vital("Kernel", host.kernel_version),
                Vital("Uptime", duration(host.uptime)),
            ],
        ),
        (
            "Hardware",
            [
                Vital("Model", " ".join(p for p in (host.hardware_vendor, host.hardware_model) if p)),
                Vital("CPU", host.cpu_brand or host.cpu_type),
                Vital("CPU cores", _cores(host.cpu_physical_cores, host.cpu_logical_cores)),
                Vital("Memory", _bytes(host.memory)),
            ],
        ),
        (
            "Network",
            [
                Vital("IP address", host.primary_ip, "code"),
                Vital("MAC address", host.primary_mac, "code"),
                Vital("Public IP address", host.public_ip, "code"),
            ],
        ),
        (
            "Agent",
            [
                Vital("osquery", host.osquery_version),
                Vital("orbit", host.orbit_version),
                Vital("Fleet Desktop", host.desktop_version),
                Vital("Checks for queries", _interval(host.distributed_interval)),
                Vital("Fetches its config", _interval(host.config_tls_refresh)),
                Vital("Sends logs", _interval(host.logger_tls_period)),
            ],
        ),
        (
            "Activity",
            [
                Vital("Last seen", _when(seen.seen_time) if seen else None, "time"),
                Vital("Enrolled", _when(host.created_at), "time"),
                Vital("Last enrolled", _when(host.last_enrolled_at), "time"),
                Vital("Details updated", _when(host.detail_updated_at), "time"),
            ],
        ),
    ]
    return [(name, [v for v in items if v.value not in (None, "")]) for name, items in groups]


def status_badges(host: Host) -> list[str]:
    seen = getattr(host, "seen", None)
    badges = [status_of(seen and seen.seen_time, seen and seen.offline_after)]
    if host.created_at >= timezone.now() - NEW_FOR:
        badges.append(HostStatus.NEW)
    return badges


def labels_of(host: Host) -> list[Any]:
    return list(host.labels.order_by("label_type", "name").only("id", "name", "label_type"))


def _scheduled_query(name: str, body: Any) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    interval = body.get("interval")
    return {
        "name": name,
        "interval": duration(interval) if isinstance(interval, int) else "",
        "snapshot": bool(body.get("snapshot")),
    }


def scheduled_for(host: Host) -> list[dict[str, Any]]:
    """The packs and scheduled queries this host is served, from the config it really gets."""
    from hosts.nodekeys import state_of
    from packs import config

    gen = config.generation()
    served = config.build(config.catalog(gen), config.inputs_for(state_of(host), config.meta(gen)))
    packs = served.get("packs") if isinstance(served.get("packs"), dict) else {}
    result = []
    for name, pack in sorted(packs.items()):
        queries = pack.get("queries") if isinstance(pack, dict) else None
        if not isinstance(queries, dict):
            continue
        result.append(
            {
                "name": name,
                "queries": [_scheduled_query(q, body) for q, body in sorted(queries.items())],
            }
        )
    return result


def query_reports(host: Host) -> QuerySet:
    """The host's latest snapshot per scheduled query (newest first)."""
    from queries.models import QueryReport

    return (
        QueryReport.objects.filter(host=host)
        .select_related("query")
        .defer("rows")
        .order_by("-last_fetched")[:REPORTS_SHOWN]
    )


def live_query_history(host: Host, user: Any) -> list[Any]:
    """The live queries that asked this host, newest first, among those the user may watch."""
    from campaigns.models import Campaign, CampaignResult
    from campaigns.services import watchable

    results = CampaignResult.objects.filter(host_id=host.pk).order_by("-id")
    campaign_ids = list(results.values_list("campaign_id", flat=True)[: RECENT_LIVE_QUERIES * 2])
    campaigns = watchable(Campaign.objects.filter(id__in=campaign_ids), user).select_related("created_by")
    answers = dict(results.filter(campaign_id__in=campaign_ids).values_list("campaign_id", "state"))
    history = list(campaigns.defer("host_ids").order_by("-created_at")[:RECENT_LIVE_QUERIES])
    for campaign in history:
        campaign.host_answer = answers.get(campaign.pk, "")
    return history


def _section(module: str, function: str) -> Any:
    """A host-page section another app provides, or ``None`` when that app is not installed."""
    import importlib
    import importlib.util

    from django.apps import apps

    if not apps.is_installed(module.split(".")[0]) or importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), function, None)


def extra_sections(host: Host, user: Any) -> dict[str, Any]:
    """Sections other apps add to the host page (software inventory, scripts, the audit trail)."""
    software = _section("software.hostpage", "software_for_host")
    scripts = _section("hostscripts.hostpage", "scripts_for_host")
    activities = _section("activities.hostpage", "activities_for_host")
    mdm = _section("mdm.hostpage", "mdm_for_host")
    mdm_profiles = _section("mdm.profiles.hostpage", "profiles_for_host")
    return {
        "mdm": mdm(host, user) if mdm else None,
        "mdm_profiles": mdm_profiles(host, user) if mdm_profiles else None,
        "software": software(host, SOFTWARE_SHOWN) if software else None,
        "scripts": scripts(host, user, SCRIPT_RUNS_SHOWN) if scripts else None,
        "activities": activities(host, user, ACTIVITIES_SHOWN) if activities else None,
    }
