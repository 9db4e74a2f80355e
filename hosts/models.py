"""Teams, enroll secrets, hosts and their vitals, seen times, roles and fleet-wide settings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from hosts.choices import Role

# Hosts enrolled before their details arrive get this, so their details are due at once
# (Fleet uses 1970-01-02 for the same reason).
NEVER = datetime(1970, 1, 2, tzinfo=UTC)


class Team(models.Model):
    """A group of hosts with its own enroll secrets and, optionally, its own agent options."""

    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    agent_options = models.JSONField(
        null=True, blank=True, help_text="Replaces the global agent options for this team's hosts when set."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def secret_digest(value: str) -> str:
    """The SHA-256 of an enroll secret (hex): what enrolment looks secrets up by."""
    return hashlib.sha256(value.encode()).hexdigest()


class SecretDigestField(models.CharField):
    """The digest of the model's ``secret``, computed on every save and bulk insert.

    ``pre_save`` runs for ``save()`` and ``bulk_create()`` alike, so no write path can leave the
    digest stale or empty (``QuerySet.update(secret=...)`` is the exception: do not use it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def pre_save(self, model_instance: models.Model, add: bool) -> str:
        value = secret_digest(model_instance.secret)
        setattr(model_instance, self.attname, value)
        return value


class EnrollSecret(models.Model):
    """A secret osquery presents at enrolment; it decides the host's team (none means global).

    Enrolment finds a secret by ``secret_digest`` (indexed) and then compares the value in
    constant time (``hosts.enrollment.find_secret``), so response times say nothing about how
    much of a guess matched. The value itself stays readable: admins need it for the agents'
    flagfiles. Who may see it is ``hosts.permissions.SECRET_READ_ROLES``.
    """

    secret = models.CharField(max_length=255, unique=True)
    secret_digest = SecretDigestField(unique=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team_id", "created_at"]

    def __str__(self) -> str:
        scope = self.team.name if self.team_id else "global"
        return f"{self.secret[:4]}… ({scope})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "secret" in update_fields:
            kwargs["update_fields"] = {*update_fields, "secret_digest"}
        super().save(*args, **kwargs)


class Host(models.Model):
    """An enrolled computer and the vitals its agent reports (the same fields Fleet keeps)."""

    osquery_host_id = models.CharField(
        max_length=255,
        unique=True,
        verbose_name="osquery host ID",
        help_text="The identifier the agent enrolled with.",
    )
    node_key_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    orbit_node_key_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="hosts")

    hostname = models.CharField(max_length=255, blank=True, db_index=True)
    computer_name = models.CharField(max_length=255, blank=True, db_index=True, verbose_name="computer name")
    uuid = models.CharField(max_length=255, blank=True, db_index=True, verbose_name="UUID")
    platform = models.CharField(max_length=255, blank=True, db_index=True)
    platform_like = models.CharField(max_length=255, blank=True, verbose_name="platform family")
    os_version = models.CharField(max_length=255, blank=True, verbose_name="OS version")
    code_name = models.CharField(max_length=255, blank=True, verbose_name="code name")
    build = models.CharField(max_length=255, blank=True)
    kernel_version = models.CharField(max_length=255, blank=True, verbose_name="kernel version")
    osquery_version = models.CharField(max_length=255, blank=True, verbose_name="osquery version")
    orbit_version = models.CharField(max_length=255, blank=True, verbose_name="orbit version")
    desktop_version = models.CharField(max_length=255, blank=True, verbose_name="Fleet Desktop version")
    # What orbit reports in ``orbit_info.scripts_enabled``: None until it has reported (or no orbit).
    scripts_enabled = models.BooleanField(null=True, blank=True, verbose_name="scripts enabled")
    cpu_type = models.CharField(max_length=255, blank=True, verbose_name="CPU type")
    cpu_subtype = models.CharField(max_length=255, blank=True, verbose_name="CPU subtype")
    cpu_brand = models.CharField(max_length=255, blank=True, verbose_name="CPU")
    cpu_physical_cores = models.PositiveIntegerField(default=0, verbose_name="physical CPU cores")
    cpu_logical_cores = models.PositiveIntegerField(default=0, verbose_name="logical CPU cores")
    memory = models.BigIntegerField(default=0, help_text="Bytes of physical memory.")
    hardware_vendor = models.CharField(max_length=255, blank=True, verbose_name="hardware vendor")
    hardware_model = models.CharField(max_length=255, blank=True, verbose_name="hardware model")
    hardware_version = models.CharField(max_length=255, blank=True, verbose_name="hardware version")
    hardware_serial = models.CharField(
        max_length=255, blank=True, db_index=True, verbose_name="serial number"
    )
    uptime = models.BigIntegerField(default=0, help_text="Seconds since boot.")
    primary_ip = models.CharField(max_length=45, blank=True, db_index=True, verbose_name="IP address")
    primary_mac = models.CharField(max_length=17, blank=True, verbose_name="MAC address")
    public_ip = models.CharField(max_length=45, blank=True, verbose_name="public IP address")

    distributed_interval = models.PositiveIntegerField(default=0, verbose_name="distributed interval")
    config_tls_refresh = models.PositiveIntegerField(default=0, verbose_name="config refresh interval")
    logger_tls_period = models.PositiveIntegerField(default=0, verbose_name="log flush interval")

    created_at = models.DateTimeField(
        default=timezone.now, db_index=True, help_text="First enrolled.", verbose_name="enrolled"
    )
    last_enrolled_at = models.DateTimeField(default=timezone.now, verbose_name="last enrolled")
    detail_updated_at = models.DateTimeField(default=NEVER, verbose_name="details updated")
    label_updated_at = models.DateTimeField(default=NEVER, verbose_name="labels updated")
    refetch_requested = models.BooleanField(default=False, verbose_name="refetch requested")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.computer_name or self.hostname or self.osquery_host_id


class HostSeenTime(models.Model):
    """When a host last checked in, kept apart from ``Host`` so hot writes stay off that row.

    ``offline_after`` is ``seen_time`` plus the host's online interval, written with it, so that
    "online" is a plain indexed comparison with now (no per-row interval arithmetic in SQL).
    """

    host = models.OneToOneField(Host, primary_key=True, on_delete=models.CASCADE, related_name="seen")
    seen_time = models.DateTimeField(db_index=True)
    offline_after = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.host_id} seen {self.seen_time:%Y-%m-%d %H:%M:%S}"


class FleetSettings(models.Model):
    """Fleet-wide settings kept in the database (a single row), edited in the console."""

    agent_options = models.JSONField(
        default=dict, blank=True, help_text="Global agent options: config, overrides, command_line_flags."
    )
    # Organisation info, shown to end users by Fleet Desktop and the My device page.
    org_name = models.CharField(max_length=255, blank=True, default="", verbose_name="organisation name")
    org_logo_url = models.URLField(max_length=1024, blank=True, default="", verbose_name="logo URL")
    org_logo_url_light_background = models.URLField(
        max_length=1024, blank=True, default="", verbose_name="logo URL (light background)"
    )
    contact_url = models.URLField(
        max_length=1024,
        blank=True,
        default="https://fleetdm.com/company/contact",
        verbose_name="contact URL",
        help_text="Where My device sends end users who need help (Fleet's org_info.contact_url).",
    )
    transparency_url = models.URLField(
        max_length=1024,
        blank=True,
        default="https://fleetdm.com/transparency",
        verbose_name="transparency URL",
        help_text="Where Fleet Desktop's \"About\" link sends end users.",
    )
    scripts_disabled = models.BooleanField(
        default=False,
        verbose_name="scripts disabled",
        help_text="Turns script runs off server-wide (Fleet's server_settings.scripts_disabled); "
        "lock, unlock and wipe still work.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "fleet settings"

    def __str__(self) -> str:
        return "Fleet settings"

    @classmethod
    def load(cls) -> FleetSettings:
        from hosts.agent_options import default_agent_options

        obj, _ = cls.objects.get_or_create(pk=1, defaults={"agent_options": default_agent_options()})
        return obj


class UserRole(models.Model):
    """A user's role, globally (no team) or on one team. Superusers are global admins."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fleet_roles")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="roles")
    role = models.CharField(max_length=32, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="unique_role_per_user_team")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} on {self.team or 'all teams'}"


class LabelType(models.TextChoices):
    REGULAR = "regular", "Regular"
    BUILTIN = "builtin", "Builtin"


class LabelMembershipType(models.TextChoices):
    DYNAMIC = "dynamic", "Dynamic (a query decides)"
    MANUAL = "manual", "Manual (a list of hosts)"


class Label(models.Model):
    """A group of hosts: those whose agent returns rows for ``query`` (dynamic) or a list (manual).

    Dynamic labels are sent to agents as ``fleet_label_query_<id>``; builtin ones are Fleet's
    (All Hosts, macOS, ...), kept up to date automatically and not editable.
    """

    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    query = models.TextField(blank=True, help_text="osquery SQL; a host is a member when it returns rows.")
    platform = models.CharField(
        max_length=255, blank=True, help_text="Only hosts of this platform run it (empty: all)."
    )
    label_type = models.CharField(max_length=16, choices=LabelType.choices, default=LabelType.REGULAR)
    label_membership_type = models.CharField(
        max_length=16, choices=LabelMembershipType.choices, default=LabelMembershipType.DYNAMIC
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    hosts = models.ManyToManyField(Host, through="LabelMembership", related_name="labels", blank=True)

    class Meta:
        ordering = ["label_type", "name"]

    def __str__(self) -> str:
        return self.name


class LabelMembership(models.Model):
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="memberships")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="label_memberships")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["label", "host"], name="unique_label_membership")]
        indexes = [models.Index(fields=["host", "label"])]

    def __str__(self) -> str:
        return f"{self.host_id} in {self.label_id}"
