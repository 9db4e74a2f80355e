"""Apple MDM state: the push certificate, device identities issued by SCEP, enrollments, the
per-device command queue, and configuration profiles with their per-host status.

The shapes follow nanomdm's and Fleet's tables (``nano_enrollments``, ``nano_commands``,
``nano_enrollment_queue`` + ``nano_command_results``, ``mdm_apple_configuration_profiles``,
``host_mdm_apple_profiles``), folded where Django makes one row simpler than two.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_uuid() -> str:
    return str(uuid.uuid4()).upper()


class PushCertificate(models.Model):
    """The APNs push certificate (one row). Its key is sealed (:mod:`fleet.sealing`); the pending
    CSR key waits here between ``mdm apns csr`` and ``mdm apns upload``."""

    topic = models.CharField(max_length=255, blank=True)
    certificate_pem = models.TextField(blank=True)
    sealed_key = models.TextField(blank=True, editable=False)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    serial_hex = models.CharField(max_length=64, blank=True)
    sha256_hex = models.CharField(max_length=64, blank=True)
    # A stand-in made by `mdm setup --dev`: pushes go to the local APNs stand-in.
    is_dev = models.BooleanField(default=False)
    uploaded_at = models.DateTimeField(null=True, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pending_sealed_key = models.TextField(blank=True, editable=False)
    pending_csr_pem = models.TextField(blank=True)
    pending_created_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "APNs push certificate"

    def __str__(self) -> str:
        return self.topic or "APNs push certificate (not uploaded)"


class DeviceIdentity(models.Model):
    """A device identity certificate our CA issued through SCEP, and the team its challenge named."""

    sha256 = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the certificate (DER).")
    serial_hex = models.CharField(max_length=64)
    subject = models.CharField(max_length=255, blank=True)
    team = models.ForeignKey("hosts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    not_after = models.DateTimeField()
    issued_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.subject or 'device'} ({self.serial_hex[:12]})"


class Enrollment(models.Model):
    """One enrolled Apple device (its device channel), matched to the host its osquery reports as."""

    udid = models.CharField(max_length=64, unique=True, verbose_name="UDID")
    serial_number = models.CharField(max_length=64, blank=True, db_index=True)
    host = models.OneToOneField(
        "hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="mdm_enrollment"
    )
    identity = models.ForeignKey(
        DeviceIdentity, null=True, blank=True, on_delete=models.SET_NULL, related_name="enrollments"
    )
    topic = models.CharField(max_length=255, blank=True)
    push_token = models.CharField(max_length=200, blank=True, help_text="Hex.")
    push_magic = models.CharField(max_length=100, blank=True, editable=False)
    model = models.CharField(max_length=100, blank=True)
    model_name = models.CharField(max_length=100, blank=True)
    product_name = models.CharField(max_length=100, blank=True)
    os_version = models.CharField(max_length=50, blank=True, verbose_name="OS version")
    device_name = models.CharField(max_length=255, blank=True)
    enrolled = models.BooleanField(default=False, help_text="TokenUpdate received and not checked out.")
    authenticated_at = models.DateTimeField(default=timezone.now)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    checked_out_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_push_error = models.CharField(max_length=255, blank=True)
    push_failures = models.PositiveIntegerField(default=0)
    # A macOS unlock: the admin revealed the lock PIN at unlock_requested_at; the Mac is unlocked
    # once it talks to us again after that (unlocked_at).
    unlock_requested_at = models.DateTimeField(null=True, blank=True)
    unlocked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.device_name or self.serial_number or self.udid


class CommandStatus(models.TextChoices):
    """A queued command's state on one device; the last four are Apple's result statuses."""

    QUEUED = "", "Queued"
    ACKNOWLEDGED = "Acknowledged", "Acknowledged"
    ERROR = "Error", "Error"
    FORMAT_ERROR = "CommandFormatError", "Command format error"
    NOT_NOW = "NotNow", "Not now"


FINAL_STATUSES = (CommandStatus.ACKNOWLEDGED, CommandStatus.ERROR, CommandStatus.FORMAT_ERROR)


class Command(models.Model):
    """One MDM command sent to one device: Fleet's ``nano_commands`` + ``nano_enrollment_queue`` +
    ``nano_command_results`` in one row (every command we send names a single device)."""

    uuid = models.CharField(max_length=64, unique=True, default=new_uuid, editable=False)
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="commands")
    request_type = models.CharField(max_length=64, db_index=True)
    payload = models.BinaryField(help_text="The command plist exactly as sent.")
    priority = models.SmallIntegerField(default=0)
    raw = models.BooleanField(default=False, help_text="Sent as a raw command by an admin.")
    # A DeviceLock's or EraseDevice's PIN, sealed; revealed to admins on request.
    sealed_pin = models.TextField(blank=True, editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20, choices=CommandStatus.choices, blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    not_now_count = models.PositiveIntegerField(default=0)
    result = models.BinaryField(null=True, blank=True, help_text="The device's last report (plist).")
    error_chain = models.JSONField(default=list, blank=True)
    result_at = models.DateTimeField(null=True, blank=True)
    cancelled = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The next command for a device, read on every Idle and every result.
            models.Index(
                fields=["enrollment", "status", "cancelled", "priority", "created_at"],
                name="mdm_command_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_type} {self.uuid}"

    @property
    def state(self) -> str:
        """pending, not now, acknowledged, error or cancelled, as admins read it."""
        if self.cancelled and self.status not in FINAL_STATUSES:
            return "cancelled"
        return {
            CommandStatus.QUEUED: "pending",
            CommandStatus.NOT_NOW: "not now",
            CommandStatus.ACKNOWLEDGED: "acknowledged",
        }.get(self.status, "error")


class Profile(models.Model):
    """A configuration profile (.mobileconfig), global ("no team") or a team's, scoped by labels."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="mdm_profiles"
    )
    scope = models.PositiveIntegerField(default=0, editable=False, help_text="Team id, or 0 for no team.")
    uuid = models.CharField(max_length=64, unique=True, default=new_uuid, editable=False)
    name = models.CharField(max_length=255, help_text="PayloadDisplayName.")
    identifier = models.CharField(max_length=255, help_text="PayloadIdentifier.")
    mobileconfig = models.BinaryField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the mobileconfig.")
    labels_include_all = models.ManyToManyField("hosts.Label", blank=True, related_name="+")
    labels_include_any = models.ManyToManyField("hosts.Label", blank=True, related_name="+")
    labels_exclude_any = models.ManyToManyField("hosts.Label", blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "identifier"], name="unique_profile_identifier_per_team"
            ),
            models.UniqueConstraint(fields=["scope", "name"], name="unique_profile_name_per_team"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.scope = self.team_id or 0
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "scope" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "scope"]
        super().save(*args, **kwargs)


class ProfileStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    VERIFYING = "verifying", "Verifying"
    VERIFIED = "verified", "Verified"
    FAILED = "failed", "Failed"


class ProfileOperation(models.TextChoices):
    INSTALL = "install", "Install"
    REMOVE = "remove", "Remove"


class HostProfile(models.Model):
    """A profile's state on one host (Fleet's ``host_mdm_apple_profiles``). The identifier and
    checksum are copied so a removal can be tracked after the profile itself is deleted."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="mdm_profiles")
    profile = models.ForeignKey(
        Profile, null=True, blank=True, on_delete=models.SET_NULL, related_name="hosts"
    )
    identifier = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    operation = models.CharField(
        max_length=8, choices=ProfileOperation.choices, default=ProfileOperation.INSTALL
    )
    status = models.CharField(max_length=10, choices=ProfileStatus.choices, default=ProfileStatus.PENDING)
    command_uuid = models.CharField(max_length=64, blank=True, db_index=True)
    detail = models.TextField(blank=True)
    retries = models.PositiveSmallIntegerField(default=0)
    resends = models.PositiveIntegerField(default=0, help_text="Times a stuck command was sent again.")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["host", "identifier"], name="unique_host_profile")]
        indexes = [models.Index(fields=["status", "updated_at"], name="mdm_hostprofile_stuck")]

    def __str__(self) -> str:
        return f"{self.identifier} on host {self.host_id}: {self.operation} {self.status}"
