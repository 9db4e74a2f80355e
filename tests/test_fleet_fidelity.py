"""Detail ingestion as Fleet does it, case for case with Fleet's own tests.

Sources: ``server/service/osquery_utils/queries_test.go`` (``TestDetailQueriesOSVersion*``,
``TestDirectIngestOSUnixLike``, ``TestDetailQueryNetworkInterfaces``) and
``server/service/osquery_test.go`` (``TestDetailQueries``, ``TestDetailQueriesWithEmptyStrings``).
"""

from __future__ import annotations

from typing import Any

import pytest

from hosts import details
from hosts.details import SIGNED_64, UNSIGNED_32, clamped_int
from hosts.models import Host
from tests.agent import Agent

pytestmark = pytest.mark.django_db


def write(agent: Agent, name: str, rows: Any) -> Host:
    """Answer one detail query through distributed/write; the host as stored afterwards."""
    key = details.DETAIL_PREFIX + name
    response = agent.authed("distributed/write", {"queries": {key: rows}, "statuses": {key: 0}})
    assert response.status_code == 200 and response.json() == {}, response.content
    return Host.objects.get(osquery_host_id=agent.identifier)


def os_row(name: str, version: str, major: str, minor: str, patch: str, build: str = "", **more: str):
    return {
        "name": name,
        "version": version,
        "major": major,
        "minor": minor,
        "patch": patch,
        "build": build,
        **more,
    }


# --- os_version --------------------------------------------------------------------------------

FLEET_OS_VERSIONS = [
    # TestDetailQueriesOSVersionUnixLike
    pytest.param(os_row("Arch Linux", "", "0", "0", "0", "rolling"), "Arch Linux rolling", id="arch_rolling"),
    pytest.param(os_row("Arch Linux", "", "1", "2", "3", "rolling"), "Arch Linux 1.2.3", id="arch_versioned"),
    pytest.param(
        os_row("Ubuntu", "18.04.5 LTS (Bionic Beaver)", "18", "4", "0"),
        "Ubuntu 18.04.5 LTS",
        id="ubuntu_bad_patch",
    ),
    # TestDetailQueriesOSVersionChrome
    pytest.param(
        os_row("chromeos", "1.3.3.7", "1", "3", "7", "chrome-build"), "chromeos 1.3.3.7", id="chrome"
    ),
    # TestDirectIngestOSUnixLike (the same parseOSVersion)
    pytest.param(os_row("macOS", "12.5", "12", "5", "0", "21G72"), "macOS 12.5.0", id="macos"),
    pytest.param(
        os_row("macOS", "13.4.1", "13", "4", "1", "22F82", extra="(c) "), "macOS 13.4.1 (c)", id="macos_rsr"
    ),
    pytest.param(
        os_row("Ubuntu", "20.04.2 LTS (Focal Fossa)", "20", "4", "0"), "Ubuntu 20.04.2 LTS", id="ubuntu"
    ),
    pytest.param(
        os_row("CentOS Linux", "CentOS Linux release 7.9.2009 (Core)", "7", "9", "2009"),
        "CentOS Linux 7.9.2009",
        id="centos",
    ),
    pytest.param(
        os_row("Debian GNU/Linux", "10 (buster)", "10", "0", "0"), "Debian GNU/Linux 10.0.0", id="debian"
    ),
    # TestDetailQueries: a row without a version column
    pytest.param(
        {
            "platform": "darwin",
            "build": "15G1004",
            "major": "10",
            "minor": "10",
            "name": "Mac OS X",
            "patch": "6",
        },
        "Mac OS X 10.10.6",
        id="mac_os_x",
    ),
    # What osquery 5 reports today
    pytest.param(
        os_row("Ubuntu", "22.04.1 LTS (Jammy Jellyfish)", "22", "4", "1"),
        "Ubuntu 22.04.1 LTS",
        id="ubuntu_jammy",
    ),
    pytest.param(os_row("macOS", "14.5", "14", "5", "0", "23F79"), "macOS 14.5.0", id="macos_sonoma"),
]


@pytest.mark.parametrize(("row", "expected"), FLEET_OS_VERSIONS)
def test_os_version_is_formatted_as_fleet_does(row, expected):
    assert details.format_os_version(row).strip() == expected


@pytest.mark.parametrize(("row", "expected"), FLEET_OS_VERSIONS)
def test_os_version_through_distributed_write(agent, row, expected):
    host = write(agent, "os_version", [{**row, "platform": row.get("platform", "linux")}])
    assert host.os_version == expected


FLEET_WINDOWS_VERSIONS = [
    # TestDetailQueriesOSVersionWindows
    pytest.param(
        {"name": "Microsoft Windows 11 Enterprise", "display_version": "21H2", "version": "10.0.22000"},
        "Windows 11 Enterprise 21H2 10.0.22000",
        id="win11",
    ),
    pytest.param(
        {"name": "Microsoft Windows 10 Enterprise LTSC", "display_version": "", "version": "10.0.17763"},
        "Windows 10 Enterprise LTSC 10.0.17763",
        id="win10_no_display_version",
    ),
    # The installation type of Fleet's current query
    pytest.param(
        {
            "name": "Microsoft Windows Server 2022 Datacenter",
            "display_version": "21H2",
            "version": "10.0.20348.2340",
            "installation_type": "Server Core",
        },
        "Windows Server 2022 Datacenter 21H2 (Server Core) 10.0.20348.2340",
        id="server_core",
    ),
]


@pytest.mark.parametrize(("row", "expected"), FLEET_WINDOWS_VERSIONS)
def test_windows_os_version_is_formatted_as_fleet_does(agent, row, expected):
    assert details.format_windows_os_version(row) == expected
    write(agent, "os_version", [{"name": row["name"], "platform": "windows", "platform_like": "windows"}])
    assert write(agent, "os_version_windows", [row]).os_version == expected


def test_os_version_query_leaves_windows_os_version_alone(agent):
    write(agent, "os_version_windows", [FLEET_WINDOWS_VERSIONS[0].values[0]])
    row = os_row("Microsoft Windows 11 Enterprise", "10.0.22000", "10", "0", "", "22000", platform="windows")
    host = write(agent, "os_version", [row])
    assert (host.platform, host.os_version) == ("windows", "Windows 11 Enterprise 21H2 10.0.22000")


def test_os_version_sets_platform_columns_as_reported(agent):
    row = os_row("Ubuntu", "22.04.1 LTS (Jammy Jellyfish)", "22", "4", "1", platform="ubuntu",
                 platform_like="debian", codename="jammy", kernel_version="5.15.0-105-generic")  # fmt: skip
    host = write(agent, "os_version", [row])
    assert (host.platform, host.platform_like, host.code_name, host.kernel_version) == (
        "ubuntu", "debian", "jammy", "5.15.0-105-generic"
    )  # fmt: skip
    # Fleet assigns them as reported, empty included; CentOS 6's empty platform is guessed.
    host = write(agent, "os_version", [os_row("CentOS", "6.10", "6", "10", "0")])
    assert (host.platform, host.platform_like, host.code_name) == ("centos", "", "")
    assert host.os_version == "CentOS 6.10.0"
    assert host.build == ""  # present (empty): set; absent: kept
    Host.objects.filter(pk=host.pk).update(build="23F79")
    host = write(agent, "os_version", [{"name": "macOS", "platform": "darwin", "major": "14"}])
    assert host.build == "23F79" and host.os_version == "macOS 14"


@pytest.mark.parametrize("rows", [[], [os_row("A", "1", "1", "0", "0"), os_row("B", "2", "2", "0", "0")]])
def test_os_version_needs_exactly_one_row(agent, rows):
    before = Host.objects.get()
    after = write(agent, "os_version", rows)
    assert (
        (after.os_version, after.platform)
        == (before.os_version, before.platform)
        == ("macOS 14.5.0", "darwin")
    )


def test_detail_queries_select_the_columns_fleet_reads():
    assert details.DETAIL_QUERIES["os_version"].sql.startswith("SELECT os.*, ")  # extra, build, ...
    windows = details.DETAIL_QUERIES["os_version_windows"].sql
    for part in (
        "AS display_version",
        "CurrentVersion\\UBR'), k.version) AS version",
        "AS installation_type",
    ):
        assert part in windows


# --- osquery_flags ------------------------------------------------------------------------------


def intervals(host: Host) -> tuple[int, int, int]:
    return host.distributed_interval, host.config_tls_refresh, host.logger_tls_period


def flags(**values: str) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def test_empty_flag_values_are_zero_not_skipped(agent):
    """osquery_test.go ``TestDetailQueriesWithEmptyStrings``: "" is 0 (``EmptyToZero``)."""
    Host.objects.update(distributed_interval=10, config_tls_refresh=20, logger_tls_period=30)
    host = write(
        agent, "osquery_flags", flags(config_tls_refresh="", distributed_interval="", logger_tls_period="")
    )
    assert intervals(host) == (0, 0, 0)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # TestDetailQueries: config_tls_refresh wins over config_refresh
        (flags(config_tls_refresh="10", config_refresh="9", distributed_interval="5", logger_tls_period="60"),
         (5, 10, 60)),
        (flags(config_refresh="9", config_tls_refresh="10"), (1, 10, 3)),
        (flags(config_refresh="42"), (1, 42, 3)),  # the fallback
        (flags(distributed_interval="-5"), (0, 2, 3)),  # Go wraps uint(-5); the column holds 0..2**31-1
        (flags(logger_tls_period="9" * 5000), (1, 2, 2**31 - 1)),
        (flags(distributed_interval="1e400", logger_tls_period="nan", config_refresh="inf"), (1, 2, 3)),
        (flags(distributed_interval="7.5", config_tls_refresh=" 8"), (1, 2, 3)),
        ([{"name": "distributed_interval", "value": "7"}, {"name": "x", "value": "9"}, {"value": "9"}],
         (7, 2, 3)),
        ([{"name": "distributed_interval"}, {"value": "9"}], (0, 2, 3)),
    ],
)  # fmt: skip
def test_flags_as_fleet_parses_them(agent, rows, expected):
    Host.objects.update(distributed_interval=1, config_tls_refresh=2, logger_tls_period=3)
    assert intervals(write(agent, "osquery_flags", rows)) == expected


# --- network_interface --------------------------------------------------------------------------


def test_network_interface_as_in_fleet(agent):
    """``TestDetailQueryNetworkInterfaces``: one row sets both; IPv6 too."""
    host = write(agent, "network_interface_unix", [{"address": "10.0.1.2", "mac": "bc:d0:74:4b:10:6d"}])
    assert (host.primary_ip, host.primary_mac) == ("10.0.1.2", "bc:d0:74:4b:10:6d")
    host = write(
        agent,
        "network_interface_unix",
        [{"address": "fd7a:115c:a1e0::d401:6637", "mac": "b2:a2:e4:62:0f:1e"}],
    )
    assert (host.primary_ip, host.primary_mac) == ("fd7a:115c:a1e0::d401:6637", "b2:a2:e4:62:0f:1e")


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [
            {"address": "10.0.0.9", "mac": "aa:aa:aa:aa:aa:aa"},
            {"address": "10.0.0.8", "mac": "bb:bb:bb:bb:bb:bb"},
        ],
    ],
    ids=["none", "two"],
)
def test_network_interface_other_than_one_row_leaves_ip_and_mac_alone(agent, rows, caplog):
    write(agent, "network_interface_unix", [{"address": "10.0.1.2", "mac": "bc:d0:74:4b:10:6d"}])
    caplog.set_level("INFO")
    host = write(agent, "network_interface_unix", rows)
    assert (host.primary_ip, host.primary_mac) == ("10.0.1.2", "bc:d0:74:4b:10:6d")
    assert not [r for r in caplog.records if r.name == "hosts.details"]  # quiet below DEBUG


def test_network_interface_values_are_cut_to_their_columns(agent):
    host = write(agent, "network_interface_unix", [{"address": "f" * 100, "mac": "m" * 100}])
    assert (host.primary_ip, host.primary_mac) == ("f" * 45, "m" * 17)


# --- hostile values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bounds", "expected"),
    [
        ("", UNSIGNED_32, 0),
        (None, SIGNED_64, 0),
        (123, SIGNED_64, 0),  # not a string: absent, as in Go's map[string]string
        ("17179869184", SIGNED_64, 17179869184),
        ("+42", UNSIGNED_32, 42),
        ("-42", SIGNED_64, -42),
        ("-42", UNSIGNED_32, 0),
        ("3000000000", UNSIGNED_32, 2**31 - 1),
        ("9223372036854775807", SIGNED_64, 2**63 - 1),
        ("9223372036854775808", SIGNED_64, 2**63 - 1),
        ("1000000000000000000", SIGNED_64, 10**18),
        ("0000000000000000000000000007", UNSIGNED_32, 7),
        ("9" * 5000, SIGNED_64, 2**63 - 1),
        ("-" + "9" * 5000, SIGNED_64, -(2**63)),
        ("inf", SIGNED_64, None),
        ("-inf", SIGNED_64, None),
        ("1e400", SIGNED_64, None),
        ("nan", SIGNED_64, None),
        ("5.0", SIGNED_64, None),
        (" 5", SIGNED_64, None),
        ("٥", SIGNED_64, None),  # int() takes Arabic-Indic digits, Go does not
        ("1_000", SIGNED_64, None),
    ],
)
def test_clamped_int(value, bounds, expected):
    assert clamped_int(value, bounds) == expected


@pytest.mark.parametrize(
    "value", ["inf", "1e400", "nan", "9" * 5000, "-" + "9" * 5000, "", 7, None, [1], {"a": 1}]
)
def test_hostile_numbers_never_fail_the_write(agent, value):
    row = {"hostname": "h", "physical_memory": value, "cpu_physical_cores": value, "cpu_logical_cores": value}
    host = write(agent, "system_info", [row])
    write(agent, "uptime", [{"total_seconds": value}])
    host.refresh_from_db()
    assert host.hostname == "h"
    for field, (low, high) in (
        ("memory", SIGNED_64),
        ("uptime", SIGNED_64),
        ("cpu_physical_cores", UNSIGNED_32),
    ):
        assert low <= getattr(host, field) <= high


def test_numbers_are_clamped_to_their_columns(agent):
    row = {"physical_memory": "9" * 30, "cpu_physical_cores": "-3", "cpu_logical_cores": "4294967296"}
    host = write(agent, "system_info", [row])
    assert (host.memory, host.cpu_physical_cores, host.cpu_logical_cores) == (2**63 - 1, 0, 2**31 - 1)
    assert write(agent, "uptime", [{"total_seconds": "-" + "9" * 30}]).uptime == -(2**63)


def test_a_non_integer_leaves_only_that_field_alone(agent):
    host = write(
        agent, "system_info", [{"physical_memory": "1e400", "cpu_logical_cores": "12", "uuid": "u-2"}]
    )
    assert (host.memory, host.cpu_logical_cores, host.uuid) == (17179869184, 12, "u-2")


def unsaved_host() -> Host:
    return Host(id=1, hostname="mac-1.local", platform="darwin", build="23F79", hardware_vendor="Apple Inc.",
                osquery_version="5.12.1", primary_ip="10.0.0.1", primary_mac="aa:bb:cc:dd:ee:ff",
                distributed_interval=1, config_tls_refresh=2, logger_tls_period=3)  # fmt: skip


@pytest.mark.parametrize("value", [123, 1.5, ["darwin"], {"x": "y"}, None, True])
def test_non_string_values_read_as_empty_as_go_does(value):
    """Go decodes rows into ``map[string]string``: what is not a string is present but ``""``.

    (The agent API flattens numbers to their text before this; anyone else calling
    ``details.ingest`` gets Go's reading.)
    """
    host = unsaved_host()
    row = {**os_row("macOS", "14.5", "14", "5", "0"), "platform": value, "build": value}
    changed = details.ingest(host, {
        "os_version": [row],
        "osquery_info": [{"version": value}],
        "system_info": [{"hostname": value, "hardware_vendor": value, "physical_memory": value}],
        "network_interface_unix": [{"address": value, "mac": value}],
        "osquery_flags": [{"name": "distributed_interval", "value": value}, {"name": value, "value": "9"}],
        "uptime": [{"total_seconds": value}],
    })  # fmt: skip
    assert (host.platform, host.build, host.os_version, host.osquery_version) == ("", "", "macOS 14.5.0", "")
    assert (host.hostname, host.hardware_vendor, host.memory, host.uptime) == (
        "mac-1.local",
        "Apple Inc.",
        0,
        0,
    )
    assert (host.primary_ip, host.primary_mac) == ("", "")
    assert (host.distributed_interval, host.config_tls_refresh, host.logger_tls_period) == (0, 2, 3)
    assert "hostname" not in changed and "platform" in changed
    host = unsaved_host()
    details.ingest(
        host, {"os_version_windows": [{"name": value, "display_version": value, "version": "10.0"}]}
    )
    assert host.os_version == "10.0"


@pytest.mark.parametrize(
    "rows", [None, "x", 7, [None], ["row"], [[1, 2]], [{"name": "a"}, "b"]], ids=lambda r: repr(r)[:12]
)
def test_rows_of_the_wrong_shape_change_nothing(rows):
    host = unsaved_host()
    names = ("os_version", "os_version_windows", "osquery_info", "osquery_flags", "system_info", "uptime",
             "network_interface_unix", "orbit_info")  # fmt: skip
    assert details.ingest(host, dict.fromkeys(names, rows)) == []


def test_long_strings_are_cut_to_255(agent):
    host = write(agent, "system_info", [{"hostname": "h" * 1000, "cpu_brand": "c" * 300}])
    assert (host.hostname, host.cpu_brand) == ("h" * 255, "c" * 255)


@pytest.mark.parametrize(
    ("serial", "expected"),
    [("Default string", ""), ("System Serial Number", ""), ("TO BE FILLED BY O.E.M. STRING", ""),
     ("-1", "C02TEST0001"), ("", "C02TEST0001"), ("C02XYZ", "C02XYZ")],
)  # fmt: skip
def test_placeholder_serials_are_blanked_as_in_fleet(agent, serial, expected):
    assert write(agent, "system_info", [{"hardware_serial": serial}]).hardware_serial == expected
