"""Live-query campaigns and the rows each host sent back.

Which hosts are still pending lives in the live-query store (``campaigns.store``), not here: the
check-in path asks the store, never the database. The database keeps what must outlive the
campaign: who asked what of whom, and every host's answer, until the retention period ends.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class CampaignStatus(models.TextChoices):
    WAITING = "waiting", "Waiting"  # created, no host has answered yet
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"  # every targeted host answered
    STOPPED = "stopped", "Stopped"
    EXPIRED = "expired", "Expired"


ACTIVE_STATUSES = (CampaignStatus.WAITING, CampaignStatus.RUNNING)


class ResultState(models.TextChoices):
    ROWS = "rows", "Answered with rows"
    NO_ROWS = "no_rows", "Answered with no rows"
    FAILED = "failed", "Failed"


class Campaign(models.Model):
    sql = models.TextField()
    query_name = models.CharField(max_length=255, blank=True, help_text="Saved query it ran, if any.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="campaigns"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.WAITING)
    # What the admin asked for, as given (ids), and what it resolved to at the start.
    target_hosts = models.JSONField(default=list, blank=True)
    target_labels = models.JSONField(default=list, blank=True)
    target_teams = models.JSONField(default=list, blank=True)
    target_all = models.BooleanField(default=False, help_text="Targets every host the creator may query.")
    host_ids = models.JSONField(default=list, blank=True, help_text="Resolved target host ids.")
    offline_host_ids = models.JSONField(default=list, blank=True, help_text="Offline at the start.")
    targeted_count = models.PositiveIntegerField(default=0)
    online_count = models.PositiveIntegerField(default=0)
    offline_count = models.PositiveIntegerField(default=0)
    missing_count = models.PositiveIntegerField(default=0)
    stored_rows = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False, help_text="Rows beyond the cap were dropped.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"Campaign {self.pk}: {self.sql[:60]}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class CampaignResult(models.Model):
    """One host's answer to one campaign (rows, no rows, or osquery's error)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="results")
    # A plain id plus the hostname: results outlive the host they came from.
    host_id = models.BigIntegerField()
    hostname = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=ResultState.choices)
    rows = models.JSONField(default=list, blank=True)
    row_count = models.PositiveIntegerField(default=0, help_text="Rows the host sent (may exceed kept).")
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["campaign_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "host_id"], name="one_result_per_host_per_campaign")
        ]
        # The host page lists the live queries a host answered, newest first.
        indexes = [models.Index(fields=["host_id", "id"], name="campaign_result_by_host")]

    def __str__(self) -> str:
        return f"{self.hostname or self.host_id}: {self.state}"
