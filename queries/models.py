"""Saved queries (Fleet's "queries"/"reports") and the latest results each host reported for them.

A query with ``interval > 0`` is scheduled: it reaches its team's hosts (or every host, for a
global query) through the config's ``Global`` / ``team-<id>`` packs, as Fleet does.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hosts.models import Team


class LoggingMode(models.TextChoices):
    SNAPSHOT = "snapshot", "Snapshot"
    DIFFERENTIAL = "differential", "Differential"
    DIFFERENTIAL_IGNORE_REMOVALS = "differential_ignore_removals", "Differential, ignoring removals"


class Query(models.Model):
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="queries")
    # "" for global queries, the team id otherwise: lets (scope, name) be unique on every database
    # (a NULL team would escape a plain unique constraint; MySQL has no partial indexes).
    team_scope = models.CharField(max_length=20, editable=False, default="")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    query = models.TextField(help_text="osquery SQL.")
    platform = models.CharField(
        max_length=255, blank=True, help_text="Comma-separated: darwin, linux, windows, chrome (empty: all)."
    )
    min_osquery_version = models.CharField(max_length=32, blank=True)
    logging = models.CharField(max_length=32, choices=LoggingMode.choices, default=LoggingMode.SNAPSHOT)
    interval = models.PositiveIntegerField(default=0, help_text="Seconds between runs; 0 = not scheduled.")
    automations_enabled = models.BooleanField(
        default=False, help_text="Send the scheduled results to the log destinations."
    )
    discard_data = models.BooleanField(default=False, help_text="Do not keep a report of the latest results.")
    observer_can_run = models.BooleanField(default=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "queries"
        constraints = [
            models.UniqueConstraint(fields=["team_scope", "name"], name="unique_query_name_per_team")
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.team_scope = str(self.team_id) if self.team_id else ""
        super().save(*args, **kwargs)

    @property
    def platforms(self) -> list[str]:
        return [p.strip() for p in self.platform.split(",") if p.strip()]

    @property
    def scheduled(self) -> bool:
        return self.interval > 0


class QueryReport(models.Model):
    """The latest snapshot one host reported for a scheduled query (Fleet's query results)."""

    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="reports")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="query_reports")
    rows = models.JSONField(default=list, blank=True)
    row_count = models.PositiveIntegerField(default=0, help_text="Rows the host reported (may exceed kept).")
    # len(rows), kept as a column so the report cap and row pagination never parse the JSON.
    kept_rows = models.PositiveIntegerField(default=0, help_text="Rows kept (fewer when the cap clipped).")
    last_fetched = models.DateTimeField()

    class Meta:
        ordering = ["query_id", "host_id"]
        constraints = [models.UniqueConstraint(fields=["query", "host"], name="one_report_per_host_query")]

    def __str__(self) -> str:
        return f"{self.query_id} on {self.host_id}"
