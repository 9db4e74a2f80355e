"""What the console and REST show about profiles: status counts, and one host's profiles.

Counts are Fleet's summary (``GET /configuration_profiles/summary``): per profile, the hosts where
it is verified, verifying, pending or failed, a removal under way counting as pending. A host's
list also shows the profiles it should get but that the reconciler has not queued yet, as
pending ("waiting to be sent"), so an admin looking right after an upload is not told "none".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet

from hosts.models import Host
from mdm.models import Enrollment, HostProfile, ProfileOperation, ProfileStatus
from mdm.profiles.scope import profiles_for_host

STATUSES = (ProfileStatus.VERIFIED, ProfileStatus.VERIFYING, ProfileStatus.PENDING, ProfileStatus.FAILED)
WAITING_DETAIL = "Waiting to be sent."


def count_annotations(prefix: str = "hosts") -> dict[str, Count]:
    """``Count`` annotations (``<status>_count``) over a Profile queryset's host rows."""
    return {
        f"{status.value}_count": Count(prefix, filter=Q(**{f"{prefix}__status": status}))
        for status in STATUSES
    }


def annotate_counts(profiles: QuerySet) -> QuerySet:
    return profiles.annotate(**count_annotations())


def status_counts(profile_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Profile id -> ``{verified, verifying, pending, failed}`` host counts (one grouped query)."""
    ids = list(profile_ids)
    counts = {pk: dict.fromkeys((s.value for s in STATUSES), 0) for pk in ids}
    if not ids:
        return counts
    rows = (
        HostProfile.objects.filter(profile_id__in=ids)
        .values_list("profile_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for profile_id, status, n in rows:
        counts[profile_id][status] = counts[profile_id].get(status, 0) + n
    return counts


@dataclass(frozen=True)
class HostProfileEntry:
    """One profile on one host, as people read it."""

    name: str
    identifier: str
    profile_uuid: str | None
    operation: str
    status: str
    detail: str
    updated_at: datetime | None
    retries: int = 0
    resends: int = 0
    row_id: int | None = None  # None: not queued yet

    @property
    def status_label(self) -> str:
        return ProfileStatus(self.status).label

    @property
    def operation_label(self) -> str:
        return ProfileOperation(self.operation).label


def host_entries(host: Host) -> list[HostProfileEntry]:
    """The host's profiles: its rows, and (when enrolled) the ones it should get but has no row
    for yet. Sorted by name."""
    rows = list(HostProfile.objects.filter(host_id=host.pk).select_related("profile").order_by("name", "id"))
    entries = [
        HostProfileEntry(
            name=row.name or (row.profile.name if row.profile else row.identifier),
            identifier=row.identifier,
            profile_uuid=row.profile.uuid if row.profile else None,
            operation=row.operation,
            status=row.status,
            detail=row.detail,
            updated_at=row.updated_at,
            retries=row.retries,
            resends=row.resends,
            row_id=row.pk,
        )
        for row in rows
    ]
    if Enrollment.objects.filter(host_id=host.pk, enrolled=True).exists():
        have = {row.identifier for row in rows}
        for profile in profiles_for_host(host):
            if profile.identifier not in have:
                entries.append(
                    HostProfileEntry(
                        name=profile.name,
                        identifier=profile.identifier,
                        profile_uuid=profile.uuid,
                        operation=ProfileOperation.INSTALL,
                        status=ProfileStatus.PENDING,
                        detail=WAITING_DETAIL,
                        updated_at=None,
                    )
                )
    return sorted(entries, key=lambda e: (e.name.lower(), e.identifier))
