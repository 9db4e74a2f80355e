"""Answers to Fleet's detail queries, recognised by the query *name* (``fleet_detail_query_<name>``).

Why by name: Fleet's detail SQL uses joins, functions and sub-selects that the tiny engine in
``sql`` does not run, and the server may change its SQL at any time. Like Fleet's osquery-perf,
we answer each known name with the columns Fleet's own query selects, computed from the host's
tables. A name we do not know, or one meant for another platform, goes to the SQL engine, so
the host then answers (or fails) the way a real osquery would, e.g. ``no such table: mdm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentapi.simulator import software
from agentapi.simulator.sql import QueryResult, execute
from agentapi.simulator.tables import HostTables, Row

DETAIL_PREFIX = "fleet_detail_query_"
_GB = 1e9  # Fleet reports "gigs" with 10e-10 multipliers, i.e. decimal gigabytes


@dataclass(frozen=True)
class _Answer:
    rows: Callable[[HostTables], list[Row]]
    platforms: frozenset[str] | None = None  # template keys


def _first(tables: HostTables, table: str) -> Row:
    rows = tables.rows(table)
    return rows[0] if rows else {}


def _os_version(t: HostTables) -> list[Row]:
    # ``os.*``: every column this platform's os_version has (``extra`` on macOS, ...).
    return [{**_first(t, "os_version"), "kernel_version": _first(t, "kernel_info")["version"]}]


def _os_version_windows(t: HostTables) -> list[Row]:
    os = _first(t, "os_version")
    return [
        {
            "name": os["name"],
            "display_version": t.identity.os.display_version,
            "version": t.identity.os.kernel_version,  # os_version.version + "." + the registry's UBR
            "installation_type": "Client",
        }
    ]


def _os_unix_like(t: HostTables) -> list[Row]:
    os = _first(t, "os_version")
    keys = ("name", "major", "minor", "patch", "extra", "build", "arch", "platform", "version")
    return [{**{k: os.get(k, "") for k in keys}, "kernel_version": _first(t, "kernel_info")["version"]}]


def _os_windows(t: HostTables) -> list[Row]:
    os = _first(t, "os_version")
    return [
        {
            "name": os["name"],
            "display_version": t.identity.os.display_version,
            "platform": os["platform"],
            "arch": os["arch"],
            "kernel_version": t.identity.os.kernel_version,
            "version": os["version"],
        }
    ]


def _osquery_flags(t: HostTables) -> list[Row]:
    wanted = ("distributed_interval", "config_tls_refresh", "config_refresh", "logger_tls_period")
    return [{"name": r["name"], "value": r["value"]} for r in t.rows("osquery_flags") if r["name"] in wanted]


def _primary_interface(t: HostTables) -> list[Row]:
    return [{"address": t.identity.ip, "mac": t.identity.mac}]


def _disk_space(t: HostTables) -> list[Row]:
    total, free = t.disk()
    return [
        {
            "percent_disk_space_available": str(round(free * 100 / total)),
            "gigs_disk_space_available": f"{free / _GB:.2f}",
            "gigs_total_disk_space": f"{total / _GB:.2f}",
        }
    ]


def _users(t: HostTables) -> list[Row]:
    return [
        {
            "uid": u["uid"],
            "username": u["username"],
            "type": u["type"] or "person",
            "groupname": "staff" if t.family == "darwin" else u["username"],
            "shell": u["shell"],
        }
        for u in t.rows("users")
    ]


def _software(t: HostTables) -> list[Row]:
    return software.detail_rows(t)  # a few hundred items per host, stable (simulator/software.py)


def _battery(t: HostTables) -> list[Row]:
    cycles = str(t.identity.index % 700 + 20)
    return [
        {
            "serial_number": t.identity.serial or "BATTERY0",
            "cycle_count": cycles,
            "health": "Good",
            "designed_capacity": "5103",
            "max_capacity": "4720",
        }
    ]


def _encrypted(t: HostTables) -> list[Row]:
    return [{"1": "1"}] if t.identity.index % 5 else []  # four hosts in five have disk encryption on


def _encrypted_linux(t: HostTables) -> list[Row]:
    return [{"encrypted": "1" if t.identity.index % 5 else "0", "path": "/"}]


def _scheduled_query_stats(t: HostTables) -> list[Row]:
    """Fleet's columns: the pack and query names split out of ``pack<d><pack><d><query>``."""
    delimiter = t.state.flags.get("pack_delimiter", "_")
    rows = []
    for r in t.rows("osquery_schedule"):
        parts = r["name"].split(delimiter, 2)
        pack, query = (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "pack" else ("", r["name"])
        rows.append(
            {
                "pack_name": pack,
                "query_name": query,
                **{
                    k: r[k]
                    for k in (
                        "average_memory",
                        "denylisted",
                        "executions",
                        "interval",
                        "last_executed",
                        "output_size",
                        "system_time",
                        "user_time",
                        "wall_time",
                    )
                },
            }
        )
    return rows


_MAC, _WIN = frozenset({"macos"}), frozenset({"windows"})
_UNIX, _LINUX = frozenset({"macos", "ubuntu", "centos"}), frozenset({"ubuntu", "centos"})

ANSWERS: dict[str, _Answer] = {
    "os_version": _Answer(_os_version),
    "os_version_windows": _Answer(_os_version_windows, _WIN),
    "os_unix_like": _Answer(_os_unix_like, _UNIX),
    "os_windows": _Answer(_os_windows, _WIN),
    "osquery_info": _Answer(lambda t: t.rows("osquery_info")[:1]),
    "osquery_flags": _Answer(_osquery_flags),
    "system_info": _Answer(lambda t: t.rows("system_info")[:1]),
    "uptime": _Answer(lambda t: t.rows("uptime")[:1]),
    "network_interface_unix": _Answer(_primary_interface, _UNIX),
    "network_interface_windows": _Answer(_primary_interface, _WIN),
    "disk_space_unix": _Answer(_disk_space, _UNIX),
    "disk_space_windows": _Answer(_disk_space, _WIN),
    "users": _Answer(_users),
    "software_macos": _Answer(_software, _MAC),
    "software_windows": _Answer(_software, _WIN),
    "software_linux": _Answer(_software, _LINUX),
    "battery": _Answer(_battery, frozenset({"macos", "windows"})),
    "disk_encryption_darwin": _Answer(_encrypted, _MAC),
    "disk_encryption_windows": _Answer(_encrypted, _WIN),
    "disk_encryption_linux": _Answer(_encrypted_linux, _LINUX),
    "scheduled_query_stats": _Answer(_scheduled_query_stats),
}


def answer(query_id: str, sql: str, tables: HostTables) -> QueryResult:
    """What this host reports for a distributed query: by name for detail queries, else by SQL."""
    if query_id.startswith(DETAIL_PREFIX):
        known = ANSWERS.get(query_id.removeprefix(DETAIL_PREFIX))
        if known and (known.platforms is None or tables.identity.template.key in known.platforms):
            return QueryResult(rows=known.rows(tables))
    return execute(sql, tables)
