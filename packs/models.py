"""Packs ("2017 packs") and their scheduled queries, with the hosts, labels and teams they target."""

from __future__ import annotations

from django.db import models

from hosts.models import Host, Label, Team
from queries.models import Query


class Pack(models.Model):
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    platform = models.CharField(max_length=255, blank=True, help_text="osquery's pack platform filter.")
    disabled = models.BooleanField(default=False)
    target_hosts = models.ManyToManyField(Host, blank=True, related_name="packs")
    target_labels = models.ManyToManyField(Label, blank=True, related_name="packs")
    target_teams = models.ManyToManyField(Team, blank=True, related_name="packs")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ScheduledQuery(models.Model):
    """A saved query run by a pack, with osquery's per-query schedule options."""

    pack = models.ForeignKey(Pack, on_delete=models.CASCADE, related_name="scheduled")
    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="scheduled_in")
    name = models.CharField(max_length=255, help_text="Name in the pack (defaults to the query's).")
    description = models.TextField(blank=True)
    interval = models.PositiveIntegerField(help_text="Seconds between runs.")
    snapshot = models.BooleanField(null=True, blank=True)
    removed = models.BooleanField(null=True, blank=True)
    platform = models.CharField(max_length=255, blank=True)
    version = models.CharField(max_length=32, blank=True, help_text="Minimum osquery version.")
    shard = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Percent of hosts (1-100).")
    denylist = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["pack_id", "name"]
        verbose_name_plural = "scheduled queries"
        constraints = [
            models.UniqueConstraint(fields=["pack", "name"], name="unique_scheduled_name_per_pack")
        ]

    def __str__(self) -> str:
        return f"{self.pack} / {self.name}"
