"""The software block of the console's host page (``hosts.host_page`` calls ``software_for_host``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models.functions import Lower

from hosts.models import Host
from software.choices import Source
from software.models import HostSoftware


@dataclass(frozen=True)
class HostSoftwareItem:
    """One row of the host's software table: what the template shows, and the ids to link with."""

    name: str
    version: str
    source: str  # for people: "macOS apps", "Debian packages", ...
    source_id: str  # the osquery table: apps, deb_packages, ...
    bundle_identifier: str
    extension_for: str
    installed_path: str
    last_opened_at: datetime | None
    title_id: int
    version_id: int


def software_for_host(host: Host, limit: int = 500) -> list[HostSoftwareItem]:
    """The host's software by name, at most ``limit`` items, in one indexed query.

    The caller decides whether the user may see ``host`` (as for the rest of its page). An empty
    list means nothing was reported yet (or the host reported no software).
    """
    labels = dict(Source.choices)
    rows = (
        HostSoftware.objects.filter(host_id=host.pk)
        .order_by(Lower("version__title__name"), "version__version", "id")
        .values_list(
            "version__title__name",
            "version__version",
            "version__title__source",
            "version__title__bundle_identifier",
            "version__title__extension_for",
            "installed_path",
            "last_opened_at",
            "version__title_id",
            "version_id",
        )[: max(0, limit)]
    )
    return [
        HostSoftwareItem(
            name, version, labels.get(source, source), source, bundle, browser, path, opened, tid, vid
        )
        for name, version, source, bundle, browser, path, opened, tid, vid in rows
    ]
