"""Task agents, the keys they connect with, the tasks they run and where metrics go.

Tasks and agents belong to a team or, with ``team`` empty, are global. Names are unique per team
with a ``scope`` column (the team's id, or 0 when global), as in ``hostscripts.Script``: a unique
(team, name) would let two global rows with the same name through (NULLs are distinct) and
MariaDB has no partial unique index to close that gap.

Secrets are never stored in clear: an agent key is kept as its SHA-256 digest only (it is shown
once, when created); secret task settings and destination header values are sealed with
``fleet.sealing`` (AES-GCM under the server key) and unsealed only to be sent to an agent.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings as django_settings
from django.db import models


class RouteType(models.TextChoices):
    ANY = "any", "Any one connected agent"
    BY_TAGS = "byTags", "Agents with one of the tags"
    BY_IDS = "byIds", "These agents"
    BY_LABELS = "byLabels", "Agents whose host has one of the labels"


class DestinationKind(models.TextChoices):
    GRAPHITE = "graphite", "Graphite (plaintext)"
    PROMETHEUS_REMOTE_WRITE = "prometheus_remote_write", "Prometheus remote write"
    SERVER = "server", "This server"


MIN_INTERVAL = 10
MAX_INTERVAL = 86_400


def key_digest(value: str) -> str:
    """The SHA-256 (hex) of an agent key: the only form in which the server keeps it."""
    return hashlib.sha256(value.encode()).hexdigest()


class ScopedNameModel(models.Model):
    """``scope`` follows ``team`` on every save (see the module docstring)."""

    scope = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.scope = self.team_id or 0  # type: ignore[attr-defined]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "scope" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "scope"]
        super().save(*args, **kwargs)


class AgentKey(ScopedNameModel):
    """What a task agent presents to connect; the agent joins the key's team (none: global)."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="agent_keys"
    )
    name = models.CharField(max_length=255)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["scope", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="unique_agent_key_name_per_scope")
        ]

    def __str__(self) -> str:
        return self.name


class TaskAgent(ScopedNameModel):
    """A running task agent, created when it first connects with a key."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="task_agents"
    )
    name = models.CharField(max_length=255)
    tags = models.JSONField(default=list, blank=True, help_text="A list of tags that byTags routes match.")
    host = models.ForeignKey(
        "hosts.Host",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="task_agents",
        help_text="The enrolled host the agent runs on: byLabels routes match its labels.",
    )
    agent_key = models.ForeignKey(
        AgentKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="agents", editable=False
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Maintained by the WebSocket consumer: true while the agent holds a connection.
    online = models.BooleanField(default=False)
    version = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["scope", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="unique_task_agent_name_per_scope")
        ]
        indexes = [models.Index(fields=["team", "online", "enabled"], name="taskagent_team_online")]

    def __str__(self) -> str:
        return self.name


class Task(ScopedNameModel):
    """One plugin run every ``interval`` seconds on the agents its route selects."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="tasks"
    )
    name = models.CharField(max_length=255)
    plugin = models.CharField(max_length=128)
    # The plugin's settings; the values of its secret fields are sealed ({"sealed": "v1:..."}).
    settings = models.JSONField(default=dict, blank=True)
    interval = models.PositiveIntegerField(
        help_text=f"Seconds between runs ({MIN_INTERVAL} to {MAX_INTERVAL})."
    )
    route_type = models.CharField(max_length=16, choices=RouteType.choices, default=RouteType.ANY)
    route_config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Raised by one on every change: an agent re-creates a task whose revision it has not seen.
    revision = models.PositiveBigIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["scope", "name", "id"]
        constraints = [models.UniqueConstraint(fields=["scope", "name"], name="unique_task_name_per_scope")]
        indexes = [models.Index(fields=["route_type", "enabled"], name="task_route_enabled")]

    def __str__(self) -> str:
        return self.name


class AnyAssignment(models.Model):
    """The one agent running an enabled ``any`` task (no row: waiting for an agent to connect)."""

    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="any_assignment")
    # CASCADE is the safety net for deletes that bypass the services: the task then becomes
    # unassigned and ``routing.assign_pending`` places it again, instead of staying pinned.
    agent = models.ForeignKey(TaskAgent, on_delete=models.CASCADE, related_name="any_assignments")
    assigned_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"task {self.task_id} on agent {self.agent_id}"


class MetricDestination(ScopedNameModel):
    """Where agents send the metrics of a team's tasks (global: tasks without a team)."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="metric_destinations"
    )
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=32, choices=DestinationKind.choices)
    url = models.CharField(max_length=2048, blank=True, help_text="Empty for kind server.")
    # Header name -> sealed value ({"sealed": "v1:..."}): they usually carry credentials.
    headers = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="unique_metric_destination_name_per_scope")
        ]

    def __str__(self) -> str:
        return self.name


class MetricSeries(models.Model):
    """One metric of one agent, told apart by its task and its other tags (``server`` destination:
    docs/tasks.md, "Metrics on the server"), with its latest value.

    ``key`` is the SHA-256 (hex) of agent, task, name and tags: a fixed-length unique column, since
    MariaDB cannot put a unique index on long text. The task goes with its metrics (CASCADE): a
    deleted task's series would otherwise linger under a name nobody can look up.
    """

    agent = models.ForeignKey(TaskAgent, on_delete=models.CASCADE, related_name="metric_series")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="metric_series"
    )
    name = models.CharField(max_length=255)
    unit = models.CharField(max_length=32, blank=True)
    type = models.CharField(max_length=8)
    # The metric's tags other than ``task`` and ``agent`` (those are the foreign keys).
    tags = models.JSONField(default=dict, blank=True)
    key = models.CharField(max_length=64, unique=True)
    last_value = models.FloatField()
    last_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "metric series"
        indexes = [
            models.Index(fields=["task", "last_at"], name="metricseries_task_last"),
            models.Index(fields=["agent", "last_at"], name="metricseries_agent_last"),
            models.Index(fields=["last_at"], name="metricseries_last"),
        ]

    def __str__(self) -> str:
        return self.name


class MetricPoint(models.Model):
    """One value of a series at the time the agent measured it; kept ``TASKSERVER_METRICS_RETENTION``
    seconds. Unique per (series, time), so a batch delivered twice is stored once."""

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="points")
    at = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "at"], name="unique_metric_point_time")]
        indexes = [models.Index(fields=["at"], name="metricpoint_at")]

    def __str__(self) -> str:
        return f"{self.series_id}@{self.at:%Y-%m-%d %H:%M:%S}"
