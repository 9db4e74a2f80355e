"""Enrolment of osquery and orbit agents (fleet-reference §1.2, §1.10, §10).

The enroll secret picks the team. The host is matched by its identifier, so a reinstalled agent
reuses its row (and moves to the secret's team) instead of creating a duplicate. Every
enrolment issues a new node key; only its hash is stored, and the previous key stops working.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.metrics import count_enrollment
from hosts import details, nodekeys, seen
from hosts.models import NEVER, EnrollSecret, Host, secret_digest

logger = logging.getLogger(__name__)


IDENTIFIER_MAX_LENGTH = 255


class EnrollmentError(Exception):
    """Enrolment refused (bad secret, cooldown): the agent gets ``node_invalid``."""


class InvalidEnrollment(ValueError):
    """The enrolment request itself is unusable (a 400, not ``node_invalid``)."""


@dataclass(frozen=True)
class Enrolled:
    host: Host
    node_key: str
    created: bool


def find_secret(secret: Any) -> EnrollSecret:
    """The enroll secret matching ``secret``: one indexed query by digest, then a constant-time
    comparison of the values (the database never compares the secret itself)."""
    if not isinstance(secret, str) or not secret.strip():
        raise EnrollmentError("enroll failed: missing enroll secret")
    given = secret.strip()
    found = EnrollSecret.objects.filter(secret_digest=secret_digest(given)).first()
    if found is None or not hmac.compare_digest(found.secret.encode(), given.encode()):
        raise EnrollmentError("enroll failed: invalid enroll secret")
    return found


def resolve_identifier(provided: str, host_details: dict[str, dict[str, str]]) -> str:
    """Fleet's ``osquery.host_identifier``: provided, uuid, instance or hostname."""
    mode = settings.OSQUERY["HOST_IDENTIFIER"]
    lookup = {
        "uuid": ("osquery_info", "uuid"),
        "instance": ("osquery_info", "instance_id"),
        "hostname": ("system_info", "hostname"),
    }.get(mode)
    if lookup:
        value = (host_details.get(lookup[0]) or {}).get(lookup[1], "")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return provided


def _check_cooldown(host: Host) -> None:
    cooldown = settings.OSQUERY["ENROLL_COOLDOWN"]
    if cooldown and host.last_enrolled_at > timezone.now() - timedelta(seconds=cooldown):
        raise EnrollmentError("enroll failed: host enrolling too often")


def enroll_osquery(
    secret: Any, host_identifier: str, host_details: dict[str, dict[str, str]], public_ip: str = ""
) -> Enrolled:
    """Enroll (or re-enroll) an osquery agent; its ``host_details`` fill the vitals at once."""
    enroll_secret = find_secret(secret)
    identifier = resolve_identifier(host_identifier, host_details)
    system_info = host_details.get("system_info") or {}
    if not identifier:
        identifier = (system_info.get("uuid") or "").strip()
    if not identifier:
        raise EnrollmentError("enroll failed: missing host identifier")
    check_identifier(identifier)
    node_key = nodekeys.new_node_key()
    now = timezone.now()

    def fill(host: Host) -> None:
        _set_enrolment_fields(host, node_key, enroll_secret.team_id, now, public_ip, host_details)

    # One transaction: a host row is never left behind without the key its agent was refused.
    with transaction.atomic():
        team_id = enroll_secret.team_id
        host, created = _upsert_host(identifier, team_id, now, public_ip, system_info, fill=fill)
        old_hash = None
        if not created:
            _check_cooldown(host)
            old_hash = _store_new_key(host, fill)
    if old_hash and old_hash != host.node_key_hash:
        logger.info("host %s re-enrolled; its previous node key is no longer valid", host.id)
        nodekeys.forget([old_hash])
    state = nodekeys.remember(host)
    seen.mark_seen(host.id, state.online_interval)
    count_enrollment("osquery", created)
    return Enrolled(host=host, node_key=node_key, created=created)


def check_identifier(identifier: str) -> None:
    """Refuse identifiers the host table cannot hold (Fleet's column is 255 characters too)."""
    if len(identifier) > IDENTIFIER_MAX_LENGTH:
        raise InvalidEnrollment(f"host identifier is longer than {IDENTIFIER_MAX_LENGTH} characters")
    if "\x00" in identifier:
        raise InvalidEnrollment("host identifier contains a NUL character")


_OSQUERY_ENROLL_FIELDS = [
    f.name for f in Host._meta.concrete_fields if not f.primary_key and f.name != "orbit_node_key_hash"
]


def _set_enrolment_fields(
    host: Host, node_key: str, team_id: int | None, now, public_ip: str, host_details: dict
) -> None:
    """The new key, team and enrolment vitals (``host_details``: osquery's enrol request)."""
    host.node_key_hash = nodekeys.hash_node_key(node_key)
    host.team_id = team_id
    host.last_enrolled_at = now
    if public_ip:
        host.public_ip = public_ip
    answered = {name: [row] for name, row in host_details.items() if isinstance(row, dict)}
    details.ingest(
        host, {k: v for k, v in answered.items() if k in ("os_version", "osquery_info", "system_info")}
    )


def _store_new_key(host: Host, fill: Callable[[Host], None]) -> str | None:
    """Give an existing host its new key and vitals (``fill``); returns the previous key's hash."""
    old_hash = host.node_key_hash
    fill(host)
    # Every column but orbit's key: orbit may enroll the same host concurrently (see _orbit_host).
    host.save(update_fields=_OSQUERY_ENROLL_FIELDS)
    return old_hash


def _upsert_host(
    identifier: str,
    team_id: int | None,
    now,
    public_ip: str,
    system_info: dict[str, str],
    hardware_uuid: str = "",
    fill: Callable[[Host], None] | None = None,
) -> tuple[Host, bool]:
    """The host row for this identifier, created when new (races resolve to one row).

    ``fill`` completes a new row before its one INSERT (osquery's enrolment: key and vitals), so a
    new host is not inserted and then updated, and its builtin labels are worked out once.
    """
    host = Host.objects.filter(osquery_host_id=identifier).first()
    if host is not None:
        return host, False
    host = _mdm_only_host(identifier, (hardware_uuid or system_info.get("uuid") or "").strip())
    if host is not None:
        return host, False
    try:
        with transaction.atomic():
            host = Host(
                osquery_host_id=identifier,
                team_id=team_id,
                created_at=now,
                last_enrolled_at=now,
                detail_updated_at=NEVER,
                refetch_requested=True,
                public_ip=public_ip,
            )
            if fill is not None:
                fill(host)
            host.save(force_insert=True)
            return host, True
    except IntegrityError:  # another request enrolled the same identifier meanwhile
        return Host.objects.get(osquery_host_id=identifier), False


def _mdm_only_host(identifier: str, hardware_uuid: str) -> Host | None:
    """A host Apple MDM enrolled before any agent did (same hardware UUID, no agent key yet): the
    agent takes it over under its own identifier, so a Mac is one host, never two."""
    if not hardware_uuid:
        return None
    host = Host.objects.filter(
        uuid__iexact=hardware_uuid,
        node_key_hash__isnull=True,
        orbit_node_key_hash__isnull=True,
        mdm_enrollment__isnull=False,
    ).first()
    if host is None:
        return None
    if Host.objects.filter(pk=host.pk, osquery_host_id=host.osquery_host_id).update(
        osquery_host_id=identifier
    ):
        host.osquery_host_id = identifier
    return host


def enroll_orbit(
    secret: Any,
    hardware_uuid: str,
    hardware_serial: str,
    hostname: str,
    platform: str,
    osquery_identifier: str,
    computer_name: str,
    hardware_model: str,
) -> tuple[Host, str]:
    """Enroll orbit (fleetd); the same host row osquery will use, matched by its identifier."""
    enroll_secret = find_secret(secret)
    identifier = osquery_identifier or hardware_uuid
    if not identifier:
        raise EnrollmentError("orbit enroll failed: missing hardware_uuid")
    check_identifier(identifier)
    orbit_key = nodekeys.new_node_key()
    now = timezone.now()
    with transaction.atomic():
        host, created = _orbit_host(identifier, enroll_secret.team_id, now, orbit_key, hardware_uuid,
                                    hardware_serial, hostname, platform, computer_name,
                                    hardware_model)  # fmt: skip
    nodekeys.forget([host.node_key_hash])
    count_enrollment("orbit", created)
    return host, orbit_key


def _orbit_host(identifier: str, team_id: int | None, now, orbit_key: str, *values: str) -> tuple[Host, bool]:
    host, created = _upsert_host(identifier, team_id, now, "", {}, values[0])
    hardware_uuid, hardware_serial, hostname, platform, computer_name, hardware_model = values
    host.orbit_node_key_hash = nodekeys.hash_node_key(orbit_key)
    host.team_id = team_id
    changed = ["orbit_node_key_hash", "team"]
    for field, value in (
        ("uuid", hardware_uuid),
        ("hardware_serial", hardware_serial),
        ("hostname", hostname),
        ("platform", platform),
        ("computer_name", computer_name),
        ("hardware_model", hardware_model),
    ):
        if value and not getattr(host, field):
            setattr(host, field, value[:255])
            changed.append(field)
    # Only these columns: osquery enrolls the same host at the same moment on a real machine, and
    # a full save would write back the node key it read before osquery's enrolment changed it.
    host.save(update_fields=changed)
    return host, created
