"""Fleet's detail queries: what the server asks a host about itself, and how answers fill vitals.

The server sends them as ``fleet_detail_query_<name>`` when a host's details are due
(``OSQUERY_DETAIL_UPDATE_INTERVAL`` plus a stable jitter) or a refetch was asked. Each query
names the platforms it runs on; each has an ingest function that maps osquery's rows (string
values) onto ``Host`` fields and returns the names of the fields it set.

The ingest functions follow Fleet's (``server/service/osquery_utils/queries.go``) and its tests:
one row expected (any other count changes nothing, logged at DEBUG only), values read as Go
reads a ``map[string]string`` (not a string: ``""``), ``""`` as 0 for numbers. Where Fleet
would fail the whole ingest on a number it cannot parse, only that field is left as it was;
numbers are clamped to their column and strings cut to it, so no agent value reaches the
database out of range.
"""

from __future__ import annotations

import functools
import logging
import re
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


# Column ranges: ``memory`` and ``uptime`` are BigIntegerField (signed 64-bit); cores and
# intervals are PositiveIntegerField, of which 0..2**31-1 is safe on every database.
SIGNED_64 = (-(2**63), 2**63 - 1)
UNSIGNED_32 = (0, 2**31 - 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts (ASCII digits, no spaces)
_MAX_EXACT_DIGITS = 19  # 20 digits and more are beyond every range above: no need to convert them
# Fleet blanks serial numbers that are firmware placeholders ("Default string", "System Serial
# Number", ...; fleetdm/fleet#25993) and ignores osquery's "-1" (#19789).
_PLACEHOLDER_SERIAL = re.compile(r"(?i)default|serial|string")


def clamped_int(value: object, bounds: tuple[int, int]) -> int | None:
    """Fleet's ``strconv.Atoi(EmptyToZero(v))`` for an integer column, clamped to its range.

    A missing or non-string value counts as ``""`` (see :func:`_text`) and so as 0. Anything
    that is not a plain integer (``"5.0"``, ``"1e400"``, ``"inf"``, ``"nan"``, ``" 5"``) is
    ``None``: Fleet fails the ingest there, we leave that one field unchanged. Never raises,
    whatever the length of the string.
    """
    low, high = bounds
    text = value if isinstance(value, str) else ""
    if text == "":
        return min(max(0, low), high)
    if not _INTEGER.fullmatch(text):
        return None
    if len(text.lstrip("+-").lstrip("0")) > _MAX_EXACT_DIGITS:
        return low if text.startswith("-") else high  # int() refuses 4301+ digits; the sign decides
    return min(max(int(text), low), high)


def _text(row: dict, column: str) -> str:
    """A column's value as Fleet reads it: a string, or ``""`` when missing or not a string.

    Go decodes a row into ``map[string]string``: a number, object, list or null there leaves
    the column present but empty (``encoding/json`` skips what it cannot store).
    """
    value = row.get(column)
    return value if isinstance(value, str) else ""


@functools.cache
def _max_length(field: str) -> int | None:
    return getattr(Host._meta.get_field(field), "max_length", None)


def _set(host: Host, field: str, value: object, changed: list[str]) -> None:
    if isinstance(value, str):
        value = value.strip()[: _max_length(field)]
    if getattr(host, field) != value:
        setattr(host, field, value)
        changed.append(field)


def _set_int(host: Host, field: str, value: object, bounds: tuple[int, int], changed: list[str]) -> None:
    number = clamped_int(value, bounds)
    if number is None:
        logger.debug("host %s: %s is not an integer: %.40r; left unchanged", host.id, field, value)
        return
    _set(host, field, number, changed)


def _single(rows: Rows, query: str) -> dict | None:
    """The one row Fleet's ingest functions expect; any other count leaves the host unchanged."""
    if isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict):
        return rows[0]
    logger.debug("detail query %s: expected a single result, got %s", query, _count(rows))
    return None


def _count(rows: object) -> object:
    return len(rows) if isinstance(rows, list) else type(rows).__name__


def parse_os_version(
    name: str, version: str, major: str, minor: str, patch: str, build: str, extra: str
) -> str:
    """Fleet's ``parseOSVersion``: the point release of an operating system.

    Ubuntu: ``version`` without the code name in parentheses (its ``patch`` column is not the
    point release); Chrome OS: ``version``; else ``major.minor.patch`` unless all three are
    ``"0"`` (Arch Linux: then ``build``, "rolling"). ``extra`` is macOS's Rapid Security
    Response, e.g. ``(c)``.
    """
    lowered = name.lower()
    if "ubuntu" in lowered:
        point = re.sub(r"\(.*\)", "", version).strip()
    elif "chrome" in lowered:
        point = version
    elif major != "0" or minor != "0" or patch != "0":
        point = f"{major}.{minor}.{patch}"
    else:
        point = build
    point = point.strip(".")
    if extra:
        point = f"{point} {extra.strip()}"
    return point


def format_os_version(row: dict) -> str:
    """``Ubuntu 22.04.1 LTS``, ``CentOS Linux 7.9.2009``, ``macOS 14.5.0``: Fleet's ``os_version``."""
    columns = ("version", "major", "minor", "patch", "build", "extra")
    name = _text(row, "name")
    return f"{name} {parse_os_version(name, *(_text(row, c) for c in columns))}"


def ingest_os_version(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "os_version"), []
    if row is None:
        return changed
    if "build" in row:
        _set(host, "build", _text(row, "build"), changed)
    platform = _text(row, "platform")
    if not platform and "centos" in _text(row, "name").lower():
        platform = "centos"  # osquery leaves platform empty on CentOS 6 (Fleet's workaround)
    _set(host, "platform", platform, changed)
    _set(host, "platform_like", _text(row, "platform_like"), changed)
    _set(host, "code_name", _text(row, "codename"), changed)
    if _text(row, "kernel_version"):
        _set(host, "kernel_version", row["kernel_version"], changed)
    if host.platform != "windows":  # Windows: os_version_windows has the registry's details
        _set(host, "os_version", format_os_version(row), changed)
    return changed


def format_windows_os_version(row: dict) -> str:
    """``Windows 11 Enterprise 21H2 10.0.22000.795``: Fleet's ``os_version`` for Windows."""
    text = f"{_text(row, 'name')} {_text(row, 'display_version')}"
    text = text.replace("Microsoft Windows", "Windows", 1).strip()
    if _text(row, "installation_type").casefold() == "server core":
        text += " (Server Core)"
    return f"{text} {_text(row, 'version')}"


def ingest_os_version_windows(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "os_version_windows"), []
    if row is not None:
        _set(host, "os_version", format_windows_os_version(row), changed)
    return changed


def ingest_osquery_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "osquery_info"), []
    if row is not None:
        _set(host, "osquery_version", _text(row, "version"), changed)
    return changed


_FLAGS = ("distributed_interval", "config_tls_refresh", "config_refresh", "logger_tls_period")


def ingest_osquery_flags(host: Host, rows: Rows) -> list[str]:
    """The intervals osquery runs with; an empty value is 0, as in Fleet (``EmptyToZero``).

    ``config_tls_refresh`` (osquery < 2.4.6) wins over ``config_refresh``, which had another
    meaning before it became its alias.
    """
    changed: list[str] = []
    refresh: dict[str, int] = {}
    for row in rows if isinstance(rows, list) else ():
        name = row.get("name") if isinstance(row, dict) else None
        if name not in _FLAGS:
            continue
        value = clamped_int(row.get("value"), UNSIGNED_32)
        if value is None:
            logger.debug("host %s: osquery flag %s is not an integer: %.40r", host.id, name, row.get("value"))
        elif name in ("config_tls_refresh", "config_refresh"):
            refresh[name] = value
        else:
            _set(host, name, value, changed)
    if refresh:
        _set(
            host,
            "config_tls_refresh",
            refresh.get("config_tls_refresh", refresh.get("config_refresh")),
            changed,
        )
    return changed


def ingest_system_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "system_info"), []
    if row is None:
        return changed
    # Fleet assigns these even when empty; a known name is kept until the agent reports another.
    for field in (
        "hostname",
        "uuid",
        "cpu_type",
        "cpu_subtype",
        "cpu_brand",
        "hardware_vendor",
        "hardware_model",
        "hardware_version",
        "computer_name",
    ):
        if _text(row, field):
            _set(host, field, row[field], changed)
    serial = _text(row, "hardware_serial")
    if _PLACEHOLDER_SERIAL.search(serial):
        _set(host, "hardware_serial", "", changed)
    elif serial and serial != "-1":
        _set(host, "hardware_serial", serial, changed)
    _set_int(host, "memory", row.get("physical_memory"), SIGNED_64, changed)
    _set_int(host, "cpu_physical_cores", row.get("cpu_physical_cores"), UNSIGNED_32, changed)
    _set_int(host, "cpu_logical_cores", row.get("cpu_logical_cores"), UNSIGNED_32, changed)
    return changed


def ingest_uptime(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "uptime"), []
    if row is not None:
        _set_int(host, "uptime", row.get("total_seconds"), SIGNED_64, changed)
    return changed


def ingest_network_interface(host: Host, rows: Rows) -> list[str]:
    """The primary IP and MAC, from exactly one row; none or several leave them as they were."""
    row, changed = _single(rows, "network_interface"), []
    if row is not None:
        _set(host, "primary_ip", _text(row, "address"), changed)
        _set(host, "primary_mac", _text(row, "mac"), changed)
    return changed


def ingest_orbit_info(host: Host, rows: Rows) -> list[str]:
    row, changed = _single(rows, "orbit_info"), []
    if row is None:
        return changed
    if _text(row, "version"):
        _set(host, "orbit_version", row["version"], changed)
    if "desktop_version" in row:
        _set(host, "desktop_version", _text(row, "desktop_version"), changed)
    enabled = _text(row, "scripts_enabled")
    if enabled in ("0", "1"):
        _set(host, "scripts_enabled", enabled == "1", changed)
    return changed


def ingest_macos_profiles(host: Host, rows: Rows) -> list[str]:
    """The configuration profiles osquery sees on a Mac: they verify what MDM installed
    (``mdm.profiles.status``; it never raises). Nothing is stored on the host row."""
    from mdm.profiles.status import verify_from_osquery  # mdm builds on hosts, not the other way

    verify_from_osquery(host, rows if isinstance(rows, list) else [])
    return []


_UNIX = frozenset({"darwin", "linux"})
_REGISTRY = (
    "SELECT data FROM registry WHERE path = "
    "'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\"
)
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
            # Every column, as Fleet's SELECT *: ``extra`` exists only on newer macOS osquery.
            "SELECT os.*, k.version AS kernel_version FROM os_version os LEFT JOIN kernel_info k LIMIT 1",
            None,
            ingest_os_version,
        ),
        DetailQuery(
            "os_version_windows",
            # Fleet's columns: the release (21H2), the version with the update build revision
            # (10.0.22631.1234; the kernel's version where the registry has no UBR) and the
            # installation type. Sub-selects, so a missing registry value is NULL, not no row.
            "SELECT os.name, "
            f"COALESCE(({_REGISTRY}DisplayVersion'), '') AS display_version, "
            f"COALESCE(os.version || '.' || ({_REGISTRY}UBR'), k.version) AS version, "
            f"COALESCE(({_REGISTRY}InstallationType'), '') AS installation_type "
            "FROM os_version os, kernel_info k LIMIT 1",
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
            "SELECT version, desktop_version, scripts_enabled FROM orbit_info",
            None,
            ingest_orbit_info,
            discovery="SELECT 1 FROM osquery_registry WHERE active = true AND registry = 'table' "
            "AND name = 'orbit_info'",
        ),
        DetailQuery(
            # Fleet's mdm_config_profiles_darwin; macos_profiles is a fleetd (orbit) table.
            "macos_profiles",
            'SELECT display_name, identifier, install_date FROM macos_profiles where type = "Configuration";',
            frozenset({"darwin"}),
            ingest_macos_profiles,
            discovery="SELECT 1 FROM osquery_registry WHERE active = true AND registry = 'table' "
            "AND name = 'macos_profiles'",
        ),
    )
}


def register(*queries: DetailQuery) -> None:
    """Add detail queries another app ingests (the software inventory), from its ``AppConfig.ready``.

    They are sent and ingested like the ones above; this module need not know those apps.
    """
    for query in queries:
        DETAIL_QUERIES[query.name] = query


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
