"""Fleet's detail queries: what the server asks a host about itself, and how answers fill vitals.

The server sends them as ``fleet_detail_query_<name>`` when a host's details are due
(``OSQUERY_DETAIL_UPDATE_INTERVAL`` plus a stable jitter) or a refetch was asked. Each query
names the platforms it runs on; each has an ingest function that maps osquery's rows (string
values) onto ``Host`` fields and returns the names of the fields it set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hosts.choices import LINUX_PLATFORMS
from hosts.models import Host

logger = logging.getLogger(__name__)

DETAIL_PREFIX = "fleet_detail_query_"
# The discovery entry of a query that must always run: once ``discovery`` is in a
# distributed/read answer, osquery skips every query that has none (Fleet sends one for each).
ALWAYS_TRUE = "SELECT 1"
Rows = list[dict[str, str]]
Ingest = Callable[[Host, Rows], list[str]]


@dataclass(frozen=True)
class DetailQuery:
    name: str
    sql: str
    platforms: frozenset[str] | None  # platform families (darwin, linux, windows); None means all
    ingest: Ingest
    discovery: str = ALWAYS_TRUE


def platform_family(platform: str, platform_like: str = "") -> str:
    """darwin, windows, linux or the platform itself (osquery reports ubuntu, rhel, ...)."""
    if platform in ("darwin", "windows", "chrome", "freebsd"):
        return platform
    if (
        platform in LINUX_PLATFORMS
        or "linux" in platform
        or any(p in LINUX_PLATFORMS for p in platform_like.replace(",", " ").split())
    ):
        return "linux"
    return platform


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(float(value)) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _set(host: Host, field: str, value: object, changed: list[str], max_length: int | None = 255) -> None:
    if isinstance(value, str) and max_length:
        value = value.strip()[:max_length]
    if getattr(host, field) != value:
        setattr(host, field, value)
        changed.append(field)


def _first(rows: Rows) -> dict[str, str] | None:
    return rows[0] if rows and isinstance(rows[0], dict) else None


def ingest_os_version(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if not row:
        return changed
    platform = row.get("platform", "")
    if platform:
        _set(host, "platform", platform, changed)
    _set(host, "platform_like", row.get("platform_like", "") or host.platform_like, changed)
    _set(host, "code_name", row.get("codename", "") or row.get("code_name", ""), changed)
    _set(host, "build", row.get("build", ""), changed)
    if row.get("kernel_version"):
        _set(host, "kernel_version", row["kernel_version"], changed)
    if platform_family(platform or host.platform) != "windows":
        _set(host, "os_version", format_os_version(row), changed)
    return changed


def format_os_version(row: dict[str, str]) -> str:
    """``macOS 14.5.0``, ``Ubuntu 22.04.4 LTS``: the name and the most precise version given."""
    name = row.get("name", "").strip()
    version = row.get("version", "").strip()
    numbers = ".".join(
        p for p in (row.get("major", ""), row.get("minor", ""), row.get("patch", "")) if p != ""
    )
    if version and not version[0].isdigit():
        return f"{name} {version}".strip()
    if numbers and (not version or len(numbers) >= len(version.split(" ")[0])):
        extra = version.split(" ", 1)[1] if " " in version else ""
        return " ".join(p for p in (name, numbers, extra) if p)
    return f"{name} {version}".strip()


def ingest_os_version_windows(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if not row:
        return changed
    parts = [
        row.get("name", "").strip(),
        row.get("display_version", "").strip(),
        row.get("version", "").strip(),
    ]
    _set(host, "os_version", " ".join(p for p in parts if p), changed)
    return changed


def ingest_osquery_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if row and row.get("version"):
        _set(host, "osquery_version", row["version"], changed)
    return changed


def ingest_osquery_flags(host: Host, rows: Rows) -> list[str]:
    changed: list[str] = []
    flags = {r.get("name"): r.get("value") for r in rows if isinstance(r, dict)}
    if "distributed_interval" in flags:
        _set(host, "distributed_interval", _int(flags["distributed_interval"]), changed)
    refresh = flags.get("config_tls_refresh") or flags.get("config_refresh")
    if refresh is not None:
        _set(host, "config_tls_refresh", _int(refresh), changed)
    if "logger_tls_period" in flags:
        _set(host, "logger_tls_period", _int(flags["logger_tls_period"]), changed)
    return changed


def ingest_system_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if not row:
        return changed
    for field, column in (
        ("hostname", "hostname"),
        ("uuid", "uuid"),
        ("cpu_type", "cpu_type"),
        ("cpu_subtype", "cpu_subtype"),
        ("cpu_brand", "cpu_brand"),
        ("hardware_vendor", "hardware_vendor"),
        ("hardware_model", "hardware_model"),
        ("hardware_version", "hardware_version"),
        ("computer_name", "computer_name"),
    ):
        if row.get(column) not in (None, ""):
            _set(host, field, row[column], changed)
    serial = row.get("hardware_serial", "")
    if serial and serial != "-1":
        _set(host, "hardware_serial", serial, changed)
    _set(host, "memory", _int(row.get("physical_memory")), changed)
    _set(host, "cpu_physical_cores", _int(row.get("cpu_physical_cores")), changed)
    _set(host, "cpu_logical_cores", _int(row.get("cpu_logical_cores")), changed)
    return changed


def ingest_uptime(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if row:
        _set(host, "uptime", _int(row.get("total_seconds")), changed)
    return changed


def ingest_network_interface(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if row:
        _set(host, "primary_ip", row.get("address", ""), changed, max_length=45)
        _set(host, "primary_mac", row.get("mac", ""), changed, max_length=17)
    return changed


def ingest_orbit_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _first(rows), []
    if row and row.get("version"):
        _set(host, "orbit_version", row["version"], changed)
    return changed


_UNIX = frozenset({"darwin", "linux"})
_PRIVATE_ADDRESS = (
    "(ia.address LIKE '10.%' OR ia.address LIKE '172.1_.%' OR ia.address LIKE '172.2_.%' "
    "OR ia.address LIKE '172.3_.%' OR ia.address LIKE '192.168.%' OR ia.address LIKE 'fd%' "
    "OR ia.address LIKE 'fc%')"
)

DETAIL_QUERIES: dict[str, DetailQuery] = {
    q.name: q
    for q in (
        DetailQuery(
            "os_version",
            "SELECT os.name, os.version, os.major, os.minor, os.patch, os.build, os.arch, os.platform, "
            "os.platform_like, os.codename, k.version AS kernel_version "
            "FROM os_version os LEFT JOIN kernel_info k LIMIT 1",
            None,
            ingest_os_version,
        ),
        DetailQuery(
            "os_version_windows",
            "SELECT os.name, os.version, COALESCE(r.data, '') AS display_version FROM os_version os "
            "LEFT JOIN registry r ON r.path = "
            "'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\DisplayVersion' LIMIT 1",
            frozenset({"windows"}),
            ingest_os_version_windows,
        ),
        DetailQuery("osquery_info", "SELECT * FROM osquery_info LIMIT 1", None, ingest_osquery_info),
        DetailQuery(
            "osquery_flags",
            "SELECT name, value FROM osquery_flags WHERE name IN ('distributed_interval', "
            "'config_tls_refresh', 'config_refresh', 'logger_tls_period')",
            None,
            ingest_osquery_flags,
        ),
        DetailQuery("system_info", "SELECT * FROM system_info LIMIT 1", None, ingest_system_info),
        DetailQuery("uptime", "SELECT * FROM uptime LIMIT 1", None, ingest_uptime),
        DetailQuery(
            "network_interface_unix",
            "SELECT ia.address, id.mac FROM interface_addresses ia "
            "JOIN interface_details id ON id.interface = ia.interface "
            "JOIN routes r ON r.interface = ia.interface "
            "WHERE (r.destination = '0.0.0.0' OR r.destination = '::') AND r.netmask = 0 "
            f"AND r.type = 'gateway' AND {_PRIVATE_ADDRESS} "
            "ORDER BY r.metric ASC, ia.address NOT LIKE '%:%' DESC LIMIT 1",
            _UNIX,
            ingest_network_interface,
        ),
        DetailQuery(
            "network_interface_windows",
            "SELECT ia.address, id.mac FROM interface_addresses ia "
            "JOIN interface_details id ON id.interface = ia.interface "
            f"WHERE {_PRIVATE_ADDRESS} ORDER BY ia.address NOT LIKE '%:%' DESC LIMIT 1",
            frozenset({"windows"}),
            ingest_network_interface,
        ),
        DetailQuery(
            "orbit_info",
            "SELECT version FROM orbit_info",
            None,
            ingest_orbit_info,
            discovery="SELECT 1 FROM osquery_registry WHERE active = true AND registry = 'table' "
            "AND name = 'orbit_info'",
        ),
    )
}


def queries_for(platform: str, platform_like: str = "") -> dict[str, DetailQuery]:
    """The detail queries for a host of this platform, keyed by their wire name."""
    family = platform_family(platform, platform_like)
    return {
        DETAIL_PREFIX + q.name: q
        for q in DETAIL_QUERIES.values()
        if q.platforms is None or family in q.platforms
    }


def ingest(host: Host, results: dict[str, Rows]) -> list[str]:
    """Apply answered detail queries (name without prefix -> rows) to the host; fields changed."""
    changed: list[str] = []
    for name, rows in results.items():
        query = DETAIL_QUERIES.get(name)
        if query is None:
            continue  # an old or future detail query: ignore, as Fleet does
        try:
            changed.extend(query.ingest(host, rows))
        except (AttributeError, TypeError, ValueError):
            logger.warning("host %s: could not ingest detail query %s", host.id, name, exc_info=True)
    return list(dict.fromkeys(changed))
