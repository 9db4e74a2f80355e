"""The software inventory: titles, their versions, which hosts have which, and kept host counts.

Shape (Fleet's ``software_titles`` / ``software`` / ``host_software``, normalised the same way):

- ``SoftwareTitle``: one product as a source reports it (``name``, ``source``, the bundle or
  extension id, the browser of an extension);
- ``SoftwareVersion``: one version of a title;
- ``HostSoftware``: one host has one version (its path and when it was last opened);
- ``HostSoftwareState``: per host, the digest of the list it last reported, so an unchanged list
  (the usual case, every detail interval) costs one indexed ``SELECT`` and no write;
- ``SoftwareTitleCount`` / ``SoftwareVersionCount``: hosts per (title or version, team,
  platform), recounted in the background (``software.counts``). Hosts split exactly into (team,
  platform) groups, so any team scope or platform filter is a ``SUM`` over a few indexed rows,
  and ``host_count`` on titles and versions is the fleet-wide total.

Uniqueness is on a SHA-256 ``key`` of the identifying fields (title: name, source, bundle or
extension id, browser; version: the title's key and the version), not on the text columns: the
same strings then compare byte for byte on every database. MariaDB's default collations would
treat ``Foo`` and ``foo``, or ``1.0a`` and ``1.0A``, as duplicates while SQLite would not, and the
ingest must map what a host sent to exactly one row either way. The key is also 64 ASCII bytes,
where a unique index over three 255-character utf8mb4 columns nears InnoDB's limit.
"""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from hosts.models import Host, Team
from software.choices import Source

NAME_LENGTH = 255
VERSION_LENGTH = 255
PATH_LENGTH = 1024
SEPARATOR = "\x00"  # cannot occur in a stored value: the ingest strips NULs first


def title_key(name: str, source: str, bundle_identifier: str, extension_for: str) -> str:
    """The identity of a title, as stored in ``SoftwareTitle.key``."""
    text = SEPARATOR.join((name, source, bundle_identifier, extension_for))
    return hashlib.sha256(text.encode()).hexdigest()


def version_key(title: str, version: str) -> str:
    """The identity of a version of the title whose key is ``title``."""
    return hashlib.sha256(f"{title}{SEPARATOR}{version}".encode()).hexdigest()


class SoftwareTitle(models.Model):
    """A piece of software as one source names it, whatever its version."""

    name = models.CharField(max_length=NAME_LENGTH)
    source = models.CharField(max_length=32, choices=Source.choices)
    bundle_identifier = models.CharField(
        max_length=NAME_LENGTH,
        blank=True,
        help_text="macOS bundle identifier (apps), or the extension's id (browser extensions).",
    )
    extension_for = models.CharField(
        max_length=32, blank=True, help_text="The browser of an extension (chrome, edge, firefox, ...)."
    )
    key = models.CharField(max_length=64, unique=True, editable=False)
    host_count = models.PositiveIntegerField(
        default=0, help_text="Hosts with any version, at the last count."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            models.Index(fields=["host_count"], name="software_title_hosts"),
            models.Index(fields=["name"], name="software_title_name"),
            models.Index(fields=["source", "name"], name="software_title_source"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_source_display()})"


class SoftwareVersion(models.Model):
    """One version of a title; hosts link to versions."""

    title = models.ForeignKey(SoftwareTitle, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=VERSION_LENGTH, blank=True)
    key = models.CharField(max_length=64, unique=True, editable=False)
    host_count = models.PositiveIntegerField(
        default=0, help_text="Hosts with this version, at the last count."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["title_id", "version"]
        indexes = [models.Index(fields=["host_count"], name="software_version_hosts")]

    def __str__(self) -> str:
        return f"{self.title.name} {self.version}".strip()


class HostSoftware(models.Model):
    """A host has a version installed.

    Unique on (host, version), which is also the index for "this host's software"; (version,
    host) serves "hosts with this version" and the recount. Neither foreign key gets an index of
    its own: these two cover them, and each index on a table of hosts times hundreds of rows
    costs space and insert time. A version that hosts still link to cannot be deleted (PROTECT):
    the orphan clean-up must never remove a link an ingest has just written.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="software_installs", db_index=False)
    version = models.ForeignKey(
        SoftwareVersion, on_delete=models.PROTECT, related_name="installs", db_index=False
    )
    installed_path = models.CharField(max_length=PATH_LENGTH, blank=True)
    last_opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "version"], name="software_host_version")]
        indexes = [models.Index(fields=["version", "host"], name="software_version_host")]
        verbose_name = verbose_name_plural = "host software"

    def __str__(self) -> str:
        return f"{self.host_id}: {self.version_id}"


class HostSoftwareState(models.Model):
    """What a host last reported, in brief: the digest decides whether anything must be written."""

    host = models.OneToOneField(
        Host, primary_key=True, on_delete=models.CASCADE, related_name="software_state"
    )
    digest = models.CharField(max_length=64)
    item_count = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False, help_text="The host reported more items than are kept.")
    changed_at = models.DateTimeField(default=timezone.now, help_text="When the list last changed.")

    def __str__(self) -> str:
        return f"{self.host_id}: {self.item_count} items"


class SoftwareTitleCount(models.Model):
    """Hosts of one team (or none) and one platform that have a title."""

    title = models.ForeignKey(SoftwareTitle, on_delete=models.CASCADE, related_name="counts")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    platform = models.CharField(max_length=255, blank=True)
    host_count = models.PositiveIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["team", "platform", "title"], name="software_tcount_team"),
            models.Index(fields=["platform", "title"], name="software_tcount_platform"),
        ]

    def __str__(self) -> str:
        return f"{self.title_id} team {self.team_id} {self.platform}: {self.host_count}"


class SoftwareVersionCount(models.Model):
    """Hosts of one team (or none) and one platform that have a version."""

    version = models.ForeignKey(SoftwareVersion, on_delete=models.CASCADE, related_name="counts")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    platform = models.CharField(max_length=255, blank=True)
    host_count = models.PositiveIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["team", "platform", "version"], name="software_vcount_team"),
            models.Index(fields=["platform", "version"], name="software_vcount_platform"),
        ]

    def __str__(self) -> str:
        return f"{self.version_id} team {self.team_id} {self.platform}: {self.host_count}"
