"""Stable per-host identities: the same ``(seed, index)`` always gives the same host.

Why stable: a benchmark enrolls once and reuses node keys (``--node-key-file``), and a restarted
simulation must re-enroll as the *same* hosts (same ``host_identifier``), as real agents do, so
the server matches them instead of creating duplicates. Everything is derived from a
``random.Random`` seeded with a string, which is reproducible across processes and Python runs
(unlike ``hash()``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

OSQUERY_VERSIONS = ("5.21.0", "5.22.1", "5.23.1")


@dataclass(frozen=True)
class OsVariant:
    """One operating-system release, with the ``os_version`` columns osquery reports for it."""

    name: str
    version: str
    major: str
    minor: str
    patch: str
    build: str
    codename: str
    kernel_version: str
    build_distro: str
    display_version: str = ""


@dataclass(frozen=True)
class Hardware:
    vendor: str
    model: str
    cpu_brand: str
    cpu_type: str
    cpu_subtype: str
    cores: int
    memory_gib: int


@dataclass(frozen=True)
class OsTemplate:
    """An OS family as osquery sees it: ``platform`` values, bitmask, releases and machines."""

    key: str
    platform: str
    platform_like: str
    build_platform: str
    platform_mask: str
    arch: str
    variants: tuple[OsVariant, ...]
    hardware: tuple[Hardware, ...]


TEMPLATES: dict[str, OsTemplate] = {
    "macos": OsTemplate(
        "macos",
        "darwin",
        "darwin",
        "darwin",
        "21",
        "arm64",
        (
            OsVariant("macOS", "14.5", "14", "5", "0", "23F79", "Sonoma", "23.5.0", "10.14"),
            OsVariant("macOS", "15.1.1", "15", "1", "1", "24B91", "Sequoia", "24.1.0", "10.14"),
            OsVariant("macOS", "13.6.2", "13", "6", "2", "22G320", "Ventura", "22.6.0", "10.14"),
        ),
        (
            Hardware("Apple Inc.", "Mac14,2", "Apple M2", "arm64e", "ARM64E", 8, 16),
            Hardware("Apple Inc.", "Mac15,6", "Apple M3 Pro", "arm64e", "ARM64E", 11, 18),
            Hardware(
                "Apple Inc.",
                "MacBookPro16,1",
                "Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz",
                "x86_64h",
                "Intel x86-64h Haswell",
                6,
                16,
            ),
        ),
    ),
    "windows": OsTemplate(
        "windows",
        "windows",
        "windows",
        "windows",
        "2",
        "64-bit",
        (
            OsVariant(
                "Microsoft Windows 11 Pro",
                "10.0.22631",
                "10",
                "0",
                "",
                "22631",
                "23H2",
                "10.0.22631.4460",
                "10",
                "23H2",
            ),
            OsVariant(
                "Microsoft Windows 11 Enterprise",
                "10.0.26100",
                "10",
                "0",
                "",
                "26100",
                "24H2",
                "10.0.26100.2314",
                "10",
                "24H2",
            ),
            OsVariant(
                "Microsoft Windows 10 Pro",
                "10.0.19045",
                "10",
                "0",
                "",
                "19045",
                "22H2",
                "10.0.19045.5131",
                "10",
                "22H2",
            ),
        ),
        (
            Hardware(
                "Dell Inc.", "Latitude 7440", "13th Gen Intel(R) Core(TM) i7-1365U", "x86_64", "", 10, 16
            ),
            Hardware(
                "LENOVO", "21HD0029US", "AMD Ryzen 7 PRO 7840U w/ Radeon 780M Graphics", "x86_64", "", 8, 32
            ),
            Hardware(
                "HP", "HP EliteBook 840 G9", "12th Gen Intel(R) Core(TM) i5-1245U", "x86_64", "", 10, 16
            ),
        ),
    ),
    "ubuntu": OsTemplate(
        "ubuntu",
        "ubuntu",
        "debian",
        "linux",
        "9",
        "x86_64",
        (
            OsVariant(
                "Ubuntu",
                "22.04.4 LTS (Jammy Jellyfish)",
                "22",
                "4",
                "0",
                "",
                "jammy",
                "5.15.0-107-generic",
                "centos7",
            ),
            OsVariant(
                "Ubuntu",
                "24.04.1 LTS (Noble Numbat)",
                "24",
                "4",
                "1",
                "",
                "noble",
                "6.8.0-49-generic",
                "centos7",
            ),
        ),
        (
            Hardware(
                "QEMU", "Standard PC (Q35 + ICH9, 2009)", "Intel Xeon Processor (Icelake)", "x86_64", "", 4, 8
            ),
            Hardware(
                "Amazon EC2", "m6i.large", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "x86_64", "", 1, 8
            ),
        ),
    ),
    "centos": OsTemplate(
        "centos",
        "centos",
        "rhel",
        "linux",
        "9",
        "x86_64",
        (
            OsVariant(
                "CentOS Linux",
                "CentOS Linux release 7.9.2009 (Core)",
                "7",
                "9",
                "2009",
                "",
                "Core",
                "3.10.0-1160.119.1.el7.x86_64",
                "centos7",
            ),
            OsVariant(
                "CentOS Stream",
                "CentOS Stream release 9",
                "9",
                "0",
                "",
                "",
                "",
                "5.14.0-527.el9.x86_64",
                "centos7",
            ),
        ),
        (
            Hardware(
                "VMware, Inc.",
                "VMware Virtual Platform",
                "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz",
                "x86_64",
                "",
                4,
                16,
            ),
            Hardware(
                "Dell Inc.",
                "PowerEdge R650",
                "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz",
                "x86_64",
                "",
                16,
                64,
            ),
        ),
    ),
}

DEFAULT_TEMPLATES = "macos:3,windows:2,ubuntu:3,centos:2"

_FIRST_NAMES = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yara",
)
_SERVER_ROLES = ("web", "db", "cache", "worker", "build", "k8s-node", "proxy", "batch")
_MAC_OUI = {"macos": "3c:22:fb", "windows": "f4:8e:38", "ubuntu": "52:54:00", "centos": "00:50:56"}


@dataclass(frozen=True)
class HostIdentity:
    """Who one simulated host is. All fields are fixed by ``(seed, index)`` and the templates."""

    seed: int
    index: int
    template: OsTemplate
    os: OsVariant
    hardware: Hardware
    uuid: str
    instance_id: str
    hostname: str
    computer_name: str
    username: str
    serial: str
    mac: str
    ip: str
    osquery_version: str
    uptime_at_start: int

    @property
    def host_identifier(self) -> str:
        """What osquery sends as ``host_identifier`` with Fleet's ``--host_identifier=uuid``."""
        return self.uuid

    @property
    def platform(self) -> str:
        return self.template.platform

    @property
    def sends_header_key(self) -> bool:
        """osquery 5.23+ also sends ``Authorization: NodeKey`` (osquery-protocol.md §1)."""
        major, minor = (int(p) for p in self.osquery_version.split(".")[:2])
        return (major, minor) >= (5, 23)


def parse_templates(spec: str) -> list[tuple[str, int]]:
    """``"macos:3,windows:2"`` -> ``[("macos", 3), ("windows", 2)]``; a bare name weighs 1."""
    result: list[tuple[str, int]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip().lower()
        if name not in TEMPLATES:
            raise ValueError(f"unknown OS template {name!r}; choose from {', '.join(TEMPLATES)}")
        try:
            value = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"weight of {name!r} must be an integer, not {weight!r}") from None
        if value < 0:
            raise ValueError(f"weight of {name!r} must not be negative")
        if value:
            result.append((name, value))
    if not result:
        raise ValueError("no OS template with a positive weight")
    return result


def template_for(index: int, weights: list[tuple[str, int]]) -> OsTemplate:
    """Templates in exact proportion: index modulo the total weight picks a slot in a fixed cycle.

    Exact shares (rather than random draws) keep a 10-host run and a 10,000-host run with the
    same mix, so benchmark figures are comparable.
    """
    slot = index % sum(w for _, w in weights)
    for name, weight in weights:
        if slot < weight:
            return TEMPLATES[name]
        slot -= weight
    raise AssertionError("unreachable")


def _hostname(rng: random.Random, template: OsTemplate, index: int, user: str) -> tuple[str, str]:
    if template.key == "macos":
        short = f"{user}-mbp-{index:05d}"
        return f"{short}.local", short
    if template.key == "windows":
        short = f"DESKTOP-{index:05d}{''.join(rng.choices('ABCDEFGHJKLMNPQRSTUVWXYZ', k=2))}"
        return short, short
    short = f"{template.key}-{rng.choice(_SERVER_ROLES)}-{index:05d}"
    return f"{short}.corp.example.com", short


def _serial(rng: random.Random, template: OsTemplate, vendor: str) -> str:
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    if template.key == "macos":
        return "".join(rng.choices(alnum, k=10))
    if vendor.startswith("VMware"):
        return "VMware-56 4d " + " ".join(f"{rng.getrandbits(8):02x}" for _ in range(6))
    if vendor in ("QEMU", "Amazon EC2"):
        return ""  # VMs often have no serial; Fleet stores it empty
    return "".join(rng.choices(alnum, k=7))


def make_identity(seed: int, index: int, weights: list[tuple[str, int]] | None = None) -> HostIdentity:
    """The host number ``index`` of simulation ``seed``: same inputs, same host, every time."""
    template = template_for(index, weights or parse_templates(DEFAULT_TEMPLATES))
    rng = random.Random(f"fleet-sim:{seed}:{index}")
    os_variant = rng.choice(template.variants)
    hardware = rng.choice(template.hardware)
    username = rng.choice(_FIRST_NAMES)
    hostname, computer_name = _hostname(rng, template, index, username)
    host_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
    mac_tail = ":".join(f"{rng.getrandbits(8):02x}" for _ in range(3))
    return HostIdentity(
        seed=seed,
        index=index,
        template=template,
        os=os_variant,
        hardware=hardware,
        uuid=host_uuid,
        instance_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        hostname=hostname,
        computer_name=computer_name,
        username=username,
        serial=_serial(rng, template, hardware.vendor),
        mac=f"{_MAC_OUI[template.key]}:{mac_tail}",
        # 10.0.0.0/8 has room for 16 M hosts; .0 and .255 are skipped.
        ip=f"10.{(index // 64516) % 256}.{(index // 254) % 254 + 1}.{index % 254 + 1}",
        osquery_version=rng.choice(OSQUERY_VERSIONS),
        uptime_at_start=rng.randint(600, 30 * 86400),
    )


def make_identities(
    seed: int, count: int, weights: list[tuple[str, int]] | None = None, start: int = 0
) -> list[HostIdentity]:
    """Hosts ``start .. start+count-1`` of simulation ``seed``."""
    return [make_identity(seed, i, weights) for i in range(start, start + count)]
