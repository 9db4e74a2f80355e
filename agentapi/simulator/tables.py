"""The osquery tables a simulated host can answer, with realistic rows derived from its identity.

Why generated rather than recorded: every host must differ (hostname, uuid, MAC, uptime), stay
the same across runs, and change over time the way real hosts do (uptime grows, a transient
process comes and goes), so that differential result logs carry real ``added``/``removed`` lines.
Every value is a string, as osquery reports them. A table missing for the host's platform is
"no such table", like a real osquery of that platform.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentapi.simulator import software
from agentapi.simulator.identity import HostIdentity

Row = dict[str, str]


@dataclass
class AgentState:
    """What the running agent knows about itself; some tables (osquery_info, osquery_flags) show it."""

    started_at: float = field(default_factory=time.time)
    pid: int = 0
    config_hash: str = ""
    config_valid: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    # name -> osquery_schedule columns, kept up to date by the agent's scheduler.
    schedule: dict[str, Row] = field(default_factory=dict)
    # The simulated orbit's state (agentapi.simulator.orbit.OrbitState); None: no orbit, no orbit_info.
    orbit: Any = None
    # The simulated Mac beside this agent (agentapi.simulator.apple.SimulatedMac) when it is under
    # MDM; macos_profiles lists the profiles it installed.
    mdm: Any = None


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: Callable[[HostTables], list[Row]]
    platforms: frozenset[str] | None = None  # template keys; None means every platform
    # Columns that exist only on some platforms (os_version.extra on macOS, ...): template keys.
    optional: dict[str, frozenset[str]] = field(default_factory=dict)


_POSIX = frozenset({"macos", "ubuntu", "centos"})
_GIB = 1 << 30

# (name, path, uid, listening port or 0) per OS family; pids are derived per host.
_PROCESSES: dict[str, tuple[tuple[str, str, int, int], ...]] = {
    "darwin": (
        ("launchd", "/sbin/launchd", 0, 0),
        ("kernel_task", "", 0, 0),
        ("osqueryd", "/opt/osquery/lib/osquery.app/Contents/MacOS/osqueryd", 0, 0),
        (
            "WindowServer",
            "/System/Library/PrivateFrameworks/SkyLight.framework/Resources/WindowServer",
            88,
            0,
        ),
        ("sshd", "/usr/sbin/sshd", 0, 22),
        ("Finder", "/System/Library/CoreServices/Finder.app", 501, 0),
        ("Google Chrome", "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome", 501, 0),
        ("Slack", "/Applications/Slack.app/Contents/MacOS/Slack", 501, 0),
    ),
    "windows": (
        ("System", "", 0, 0),
        ("smss.exe", "C:\\Windows\\System32\\smss.exe", 0, 0),
        ("lsass.exe", "C:\\Windows\\System32\\lsass.exe", 0, 0),
        ("svchost.exe", "C:\\Windows\\System32\\svchost.exe", 0, 135),
        ("osqueryd.exe", "C:\\Program Files\\osquery\\osqueryd\\osqueryd.exe", 0, 0),
        ("explorer.exe", "C:\\Windows\\explorer.exe", 1001, 0),
        ("msedge.exe", "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe", 1001, 0),
    ),
    "linux": (
        ("systemd", "/usr/lib/systemd/systemd", 0, 0),
        ("sshd", "/usr/sbin/sshd", 0, 22),
        ("osqueryd", "/opt/osquery/bin/osqueryd", 0, 0),
        ("cron", "/usr/sbin/cron", 0, 0),
        ("rsyslogd", "/usr/sbin/rsyslogd", 0, 0),
        ("nginx", "/usr/sbin/nginx", 33, 443),
        ("node_exporter", "/usr/local/bin/node_exporter", 65534, 9100),
    ),
}
# Comes and goes every ten minutes on a third of the hosts: real churn for differential logs.
_TRANSIENT = {
    "darwin": ("softwareupdated", "/System/Library/PrivateFrameworks/SoftwareUpdate.framework"),
    "windows": ("TiWorker.exe", "C:\\Windows\\WinSxS\\TiWorker.exe"),
    "linux": ("unattended-upgr", "/usr/bin/python3"),
}

_SOFTWARE = {
    "apps": ("name", "bundle_identifier", "bundle_short_version", "path", "last_opened_time"),
    "programs": ("name", "version", "publisher", "install_location"),
    "deb_packages": ("name", "version", "arch", "source"),
    "rpm_packages": ("name", "version", "release", "arch"),
}


class HostTables:
    """Table rows for one host at the current time (``clock`` is injectable for tests)."""

    def __init__(
        self, identity: HostIdentity, state: AgentState | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.identity = identity
        self.state = state or AgentState(started_at=clock())
        self.clock = clock
        self.rng_seed = f"fleet-sim-tables:{identity.seed}:{identity.index}"
        if not self.state.pid:
            self.state.pid = random.Random(self.rng_seed).randint(300, 9000)

    @property
    def family(self) -> str:
        return self.identity.template.build_platform

    def has(self, table: str) -> bool:
        spec = TABLES.get(table)
        if table == "orbit_info":  # an extension table: there only while orbit runs
            return self.state.orbit is not None
        if table == "macos_profiles":  # the Mac Admins extension fleetd ships: with orbit (or MDM)
            return self.identity.template.key == "macos" and (
                self.state.orbit is not None or self.state.mdm is not None
            )
        return spec is not None and (spec.platforms is None or self.identity.template.key in spec.platforms)

    def columns(self, table: str) -> tuple[str, ...]:
        """The table's columns on this host's platform, in schema order."""
        spec, key = TABLES[table], self.identity.template.key
        return tuple(c for c in spec.columns if c not in spec.optional or key in spec.optional[c])

    def rows(self, table: str) -> list[Row]:
        """All rows of ``table``, each with every column in schema order, values as strings."""
        columns = self.columns(table)
        return [{c: str(r.get(c, "")) for c in columns} for r in TABLES[table].rows(self)]

    def uptime_seconds(self) -> int:
        return self.identity.uptime_at_start + int(self.clock() - self.state.started_at)

    def disk(self) -> tuple[int, int]:
        """(total, available) bytes of the system disk, stable for the host, slowly filling."""
        rng = random.Random(self.rng_seed + ":disk")
        total = rng.choice((128, 256, 512, 1024)) * _GIB
        free = int(total * rng.uniform(0.15, 0.8)) - (self.uptime_seconds() // 3600) * 1024 * 1024
        return total, max(free, total // 20)


def _os_version(t: HostTables) -> list[Row]:
    i, os = t.identity, t.identity.os
    row = {
        "name": os.name,
        "version": os.version,
        "major": os.major,
        "minor": os.minor,
        "patch": os.patch,
        "build": os.build,
        "platform": i.template.platform,
        "platform_like": i.template.platform_like,
        "codename": os.codename,
        "arch": i.template.arch,
    }
    if i.template.key == "macos":
        row["extra"] = ""
    if i.template.key == "windows":
        row.update(install_date="20240115093000.000000-000", revision=os.kernel_version.rsplit(".", 1)[-1])
    return [row]


def _system_info(t: HostTables) -> list[Row]:
    i, hw = t.identity, t.identity.hardware
    threads = 1 if i.template.key == "macos" else 2
    return [
        {
            "hostname": i.hostname,
            "uuid": i.uuid,
            "cpu_type": hw.cpu_type,
            "cpu_subtype": hw.cpu_subtype,
            "cpu_brand": hw.cpu_brand,
            "cpu_physical_cores": hw.cores,
            "cpu_logical_cores": hw.cores * threads,
            "cpu_sockets": 1,
            "cpu_microcode": "",
            "physical_memory": hw.memory_gib * _GIB,
            "hardware_vendor": hw.vendor,
            "hardware_model": hw.model,
            "hardware_version": "",
            "hardware_serial": i.serial,
            "board_vendor": hw.vendor,
            "board_model": "",
            "board_version": "",
            "board_serial": i.serial,
            "computer_name": i.computer_name,
            "local_hostname": i.computer_name,
            "emulated_cpu_type": "",
        }
    ]


def _osquery_info(t: HostTables) -> list[Row]:
    i = t.identity
    return [
        {
            "pid": t.state.pid,
            "uuid": i.uuid,
            "instance_id": i.instance_id,
            "version": i.osquery_version,
            "config_hash": t.state.config_hash,
            "config_valid": int(t.state.config_valid),
            "extensions": "active",
            "build_platform": i.template.build_platform,
            "build_distro": i.os.build_distro,
            "start_time": int(t.state.started_at),
            "watcher": t.state.pid - 1,
            "platform_mask": i.template.platform_mask,
        }
    ]


def _platform_info(t: HostTables) -> list[Row]:
    if t.identity.hardware.vendor == "QEMU":
        return []  # no SMBIOS in this VM: osquery then omits platform_info from host_details
    firmware = "efi" if t.identity.template.key in ("macos", "windows") else "bios"
    return [
        {
            "vendor": t.identity.hardware.vendor,
            "version": "1.22.0",
            "date": "03/12/2024",
            "revision": "1.22",
            "extra": "",
            "firmware_type": firmware,
            "address": "0xf0000",
            "size": "16777216",
            "volume_size": "0",
        }
    ]


def _uptime(t: HostTables) -> list[Row]:
    s = t.uptime_seconds()
    return [
        {
            "days": s // 86400,
            "hours": s % 86400 // 3600,
            "minutes": s % 3600 // 60,
            "seconds": s % 60,
            "total_seconds": s,
        }
    ]


def _time(t: HostTables) -> list[Row]:
    now = int(t.clock())
    g = time.gmtime(now)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", g)
    return [
        {
            "weekday": time.strftime("%A", g),
            "year": g.tm_year,
            "month": g.tm_mon,
            "day": g.tm_mday,
            "hour": g.tm_hour,
            "minutes": g.tm_min,
            "seconds": g.tm_sec,
            "timezone": "UTC",
            "local_timezone": "UTC",
            "unix_time": now,
            "timestamp": time.strftime("%a %b %d %H:%M:%S %Y UTC", g),
            "datetime": iso,
            "iso_8601": iso,
        }
    ]


def _kernel_info(t: HostTables) -> list[Row]:
    path = {"darwin": "/System/Library/Kernels/kernel", "windows": "\\SystemRoot\\system32\\ntoskrnl.exe"}
    return [
        {
            "version": t.identity.os.kernel_version,
            "arguments": "ro quiet" if t.family == "linux" else "",
            "path": path.get(t.family, f"/boot/vmlinuz-{t.identity.os.kernel_version}"),
            "device": "",
        }
    ]


def _users(t: HostTables) -> list[Row]:
    owner = t.identity.username
    if t.family == "windows":
        return [
            {
                "uid": 500,
                "gid": 513,
                "username": "Administrator",
                "description": "Built-in account",
                "directory": "",
                "shell": "C:\\Windows\\system32\\cmd.exe",
                "type": "local",
            },
            {
                "uid": 1001,
                "gid": 513,
                "username": owner,
                "description": "",
                "type": "local",
                "directory": f"C:\\Users\\{owner}",
                "shell": "C:\\Windows\\system32\\cmd.exe",
            },
        ]
    home = "/Users" if t.family == "darwin" else "/home"
    user_uid = 501 if t.family == "darwin" else 1000
    root_home = "/root" if t.family == "linux" else "/var/root"
    shell = "/bin/zsh" if t.family == "darwin" else "/bin/bash"
    return [
        {
            "uid": 0,
            "gid": 0,
            "username": "root",
            "description": "System Administrator",
            "directory": root_home,
            "shell": "/bin/sh",
            "type": "",
        },
        {
            "uid": user_uid,
            "gid": 20 if t.family == "darwin" else 1000,
            "username": owner,
            "description": owner,
            "directory": f"{home}/{owner}",
            "shell": shell,
            "type": "",
        },
    ]


def _process_list(t: HostTables) -> list[tuple[int, str, str, int, int]]:
    rng = random.Random(t.rng_seed + ":pids")
    fixed = {"launchd": 1, "systemd": 1, "System": 4}
    procs = [
        (fixed.get(n) or rng.randint(100, 60000), n, p, uid, port) for n, p, uid, port in _PROCESSES[t.family]
    ]
    if (int(t.clock()) // 600 + t.identity.index) % 3 == 0:
        name, path = _TRANSIENT[t.family]
        procs.append((60001 + (int(t.clock()) // 600) % 1000, name, path, 0, 0))
    return procs


def _processes(t: HostTables) -> list[Row]:
    boot = int(t.clock()) - t.uptime_seconds()
    return [
        {
            "pid": pid,
            "name": name,
            "path": path,
            "cmdline": path,
            "state": "S",
            "uid": uid,
            "gid": uid,
            "parent": 0 if pid in (1, 4) else 1,
            "start_time": boot + (pid % 600),
            "resident_size": 4096 * (pid % 9000),
            "user_time": pid % 97,
            "system_time": pid % 31,
            "threads": 1 + pid % 12,
        }
        for pid, name, path, uid, _ in _process_list(t)
    ]


def _listening_ports(t: HostTables) -> list[Row]:
    return [
        {
            "pid": pid,
            "port": port,
            "protocol": 6,
            "family": 2,
            "address": "0.0.0.0",
            "fd": 3,
            "socket": pid * 7,
            "path": "",
            "net_namespace": "",
        }
        for pid, _, _, _, port in _process_list(t)
        if port
    ]


def _interface_name(t: HostTables) -> str:
    return {"darwin": "en0", "windows": "Ethernet", "linux": "eth0"}[t.family]


def _interface_addresses(t: HostTables) -> list[Row]:
    name, i = _interface_name(t), t.identity
    v6 = "fe80::" + i.mac.replace(":", "")[-4:]
    loopback = "lo0" if t.family == "darwin" else "lo"
    return [
        {
            "interface": loopback,
            "address": "127.0.0.1",
            "mask": "255.0.0.0",
            "broadcast": "",
            "point_to_point": "127.0.0.1",
            "type": "manual",
            "friendly_name": "",
        },
        {
            "interface": name,
            "address": i.ip,
            "mask": "255.255.0.0",
            "point_to_point": "",
            "type": "dhcp",
            "broadcast": i.ip.rsplit(".", 2)[0] + ".255.255",
            "friendly_name": name,
        },
        {
            "interface": name,
            "address": v6,
            "mask": "ffff:ffff:ffff:ffff::",
            "broadcast": "",
            "point_to_point": "",
            "type": "auto",
            "friendly_name": name,
        },
    ]


def _interface_details(t: HostTables) -> list[Row]:
    up = t.uptime_seconds()
    loopback = "lo0" if t.family == "darwin" else "lo"
    return [
        {
            "interface": loopback,
            "mac": "00:00:00:00:00:00",
            "type": 24,
            "mtu": 16384,
            "metric": 0,
            "flags": 32841,
            "ipackets": up * 3,
            "opackets": up * 3,
            "link_speed": 0,
        },
        {
            "interface": _interface_name(t),
            "mac": t.identity.mac,
            "type": 6,
            "mtu": 1500,
            "metric": 0,
            "flags": 34915,
            "ipackets": up * 40,
            "opackets": up * 25,
            "ibytes": up * 52000,
            "obytes": up * 9000,
            "link_speed": 1000,
        },
    ]


def _routes(t: HostTables) -> list[Row]:
    gateway = t.identity.ip.rsplit(".", 2)[0] + ".0.1"
    return [
        {
            "destination": "0.0.0.0",
            "netmask": 0,
            "gateway": gateway,
            "source": t.identity.ip,
            "flags": 3,
            "interface": _interface_name(t),
            "mtu": 1500,
            "metric": 100,
            "type": "gateway",
            "hopcount": 0,
        }
    ]


def _osquery_flags(t: HostTables) -> list[Row]:
    return [
        {
            "name": name,
            "type": "int32" if value.isdigit() else "string",
            "description": "",
            "default_value": "",
            "value": value,
            "shell_only": 0,
        }
        for name, value in sorted(t.state.flags.items())
    ]


def _osquery_registry(t: HostTables) -> list[Row]:
    return [
        {"registry": "table", "name": name, "owner_uuid": 0, "internal": 0, "active": 1}
        for name in sorted(TABLES)
        if t.has(name)
    ]


def _orbit_info(t: HostTables) -> list[Row]:
    orbit = t.state.orbit
    if orbit is None:
        return []
    channels = orbit.channels
    return [
        {
            "version": orbit.version,
            "desktop_version": orbit.desktop_version,
            "scripts_enabled": int(orbit.scripts_enabled),
            "orbit_channel": channels.get("orbit", "stable"),
            "osqueryd_channel": channels.get("osqueryd", "stable"),
            "desktop_channel": channels.get("desktop", "stable"),
            "enrolled": 1,
            "uptime": t.uptime_seconds(),
        }
    ]


def _macos_profiles(t: HostTables) -> list[Row]:
    """The Mac's installed profiles, as ``profiles -C`` shows them (the MDM enrollment profile too)."""
    mac = t.state.mdm
    return [profile.as_table_row() for profile in mac.installed_profiles()] if mac is not None else []


def _osquery_schedule(t: HostTables) -> list[Row]:
    return [dict(row, name=name) for name, row in sorted(t.state.schedule.items())]


def _mounts(t: HostTables) -> list[Row]:
    total, free = t.disk()
    block = 4096
    mac = t.family == "darwin"
    return [
        {
            "device": "/dev/disk3s1s1" if mac else "/dev/sda1",
            "device_alias": "",
            "path": "/",
            "type": "apfs" if mac else "ext4",
            "blocks_size": block,
            "blocks": total // block,
            "blocks_free": free // block,
            "blocks_available": free // block,
            "inodes": 6_000_000,
            "inodes_free": 5_000_000,
            "flags": "ro" if t.family == "darwin" else "rw",
        }
    ]


def _logical_drives(t: HostTables) -> list[Row]:
    total, free = t.disk()
    return [
        {
            "device_id": "C:",
            "type": "Local Disk",
            "description": "Local Fixed Disk",
            "free_space": free,
            "size": total,
            "file_system": "NTFS",
            "boot_partition": 1,
        }
    ]


def _logged_in_users(t: HostTables) -> list[Row]:
    owner = t.identity.username
    since = int(t.clock()) - t.uptime_seconds() + 120
    tty = {"darwin": "console", "windows": "console", "linux": "pts/0"}[t.family]
    return [
        {
            "type": "user",
            "user": owner,
            "tty": tty,
            "host": "",
            "time": since,
            "pid": 1234,
            "sid": "",
            "registry_hive": "",
        }
    ]


def _software(table: str) -> Callable[[HostTables], list[Row]]:
    return lambda t: software.table_rows(t, table)  # the same items as the software detail query


TABLES: dict[str, Table] = {
    "os_version": Table(
        (
            "name",
            "version",
            "major",
            "minor",
            "patch",
            "build",
            "platform",
            "platform_like",
            "codename",
            "arch",
            "extra",
            "install_date",
            "revision",
        ),
        _os_version,
        optional={
            "extra": frozenset({"macos"}),
            "install_date": frozenset({"windows"}),
            "revision": frozenset({"windows"}),
        },
    ),
    "system_info": Table(
        (
            "hostname",
            "uuid",
            "cpu_type",
            "cpu_subtype",
            "cpu_brand",
            "cpu_physical_cores",
            "cpu_logical_cores",
            "cpu_sockets",
            "cpu_microcode",
            "physical_memory",
            "hardware_vendor",
            "hardware_model",
            "hardware_version",
            "hardware_serial",
            "board_vendor",
            "board_model",
            "board_version",
            "board_serial",
            "computer_name",
            "local_hostname",
            "emulated_cpu_type",
        ),
        _system_info,
        optional={"emulated_cpu_type": frozenset({"windows"})},
    ),
    "osquery_info": Table(
        (
            "pid",
            "uuid",
            "instance_id",
            "version",
            "config_hash",
            "config_valid",
            "extensions",
            "build_platform",
            "build_distro",
            "start_time",
            "watcher",
            "platform_mask",
        ),
        _osquery_info,
    ),
    "platform_info": Table(
        ("vendor", "version", "date", "revision", "extra", "firmware_type", "address", "size", "volume_size"),
        _platform_info,
    ),
    "uptime": Table(("days", "hours", "minutes", "seconds", "total_seconds"), _uptime),
    "time": Table(
        (
            "weekday",
            "year",
            "month",
            "day",
            "hour",
            "minutes",
            "seconds",
            "timezone",
            "local_timezone",
            "unix_time",
            "timestamp",
            "datetime",
            "iso_8601",
        ),
        _time,
    ),
    "kernel_info": Table(("version", "arguments", "path", "device"), _kernel_info),
    "users": Table(("uid", "gid", "username", "description", "directory", "shell", "type"), _users),
    "processes": Table(
        (
            "pid",
            "name",
            "path",
            "cmdline",
            "state",
            "uid",
            "gid",
            "parent",
            "start_time",
            "resident_size",
            "user_time",
            "system_time",
            "threads",
        ),
        _processes,
    ),
    "listening_ports": Table(
        ("pid", "port", "protocol", "family", "address", "fd", "socket", "path", "net_namespace"),
        _listening_ports,
    ),
    "interface_addresses": Table(
        ("interface", "address", "mask", "broadcast", "point_to_point", "type", "friendly_name"),
        _interface_addresses,
    ),
    "interface_details": Table(
        (
            "interface",
            "mac",
            "type",
            "mtu",
            "metric",
            "flags",
            "ipackets",
            "opackets",
            "ibytes",
            "obytes",
            "link_speed",
        ),
        _interface_details,
    ),
    "routes": Table(
        (
            "destination",
            "netmask",
            "gateway",
            "source",
            "flags",
            "interface",
            "mtu",
            "metric",
            "type",
            "hopcount",
        ),
        _routes,
    ),
    "osquery_flags": Table(
        ("name", "type", "description", "default_value", "value", "shell_only"), _osquery_flags
    ),
    "osquery_schedule": Table(
        (
            "name",
            "query",
            "interval",
            "executions",
            "last_executed",
            "denylisted",
            "output_size",
            "wall_time",
            "wall_time_ms",
            "user_time",
            "system_time",
            "average_memory",
        ),
        _osquery_schedule,
    ),
    "osquery_registry": Table(("registry", "name", "owner_uuid", "internal", "active"), _osquery_registry),
    "orbit_info": Table(
        (
            "version",
            "desktop_version",
            "scripts_enabled",
            "orbit_channel",
            "osqueryd_channel",
            "desktop_channel",
            "enrolled",
            "uptime",
        ),
        _orbit_info,
    ),
    "macos_profiles": Table(
        (
            "description",
            "display_name",
            "identifier",
            "install_date",
            "organization",
            "type",
            "uuid",
            "verification_state",
        ),
        _macos_profiles,
        frozenset({"macos"}),
    ),
    "logged_in_users": Table(
        ("type", "user", "tty", "host", "time", "pid", "sid", "registry_hive"), _logged_in_users
    ),
    "mounts": Table(
        (
            "device",
            "device_alias",
            "path",
            "type",
            "blocks_size",
            "blocks",
            "blocks_free",
            "blocks_available",
            "inodes",
            "inodes_free",
            "flags",
        ),
        _mounts,
        _POSIX,
    ),
    "logical_drives": Table(
        ("device_id", "type", "description", "free_space", "size", "file_system", "boot_partition"),
        _logical_drives,
        frozenset({"windows"}),
    ),
    "apps": Table(_SOFTWARE["apps"], _software("apps"), frozenset({"macos"})),
    "programs": Table(_SOFTWARE["programs"], _software("programs"), frozenset({"windows"})),
    "deb_packages": Table(_SOFTWARE["deb_packages"], _software("deb_packages"), frozenset({"ubuntu"})),
    "rpm_packages": Table(_SOFTWARE["rpm_packages"], _software("rpm_packages"), frozenset({"centos"})),
}
