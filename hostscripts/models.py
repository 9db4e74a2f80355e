"""Scripts: the library (:class:`Script`) and each host's ordered queue of work (:class:`ScriptRun`).

A run is one script on one host, whether a saved script, an ad-hoc one, or one of the built-in
device actions (lock, unlock, wipe). Its contents are copied into the run, so editing or deleting a
saved script never changes what a queued run executes or what a finished run shows it ran.

A run's state follows Fleet's ``host_script_results``: ``exit_code`` NULL is pending, 0 ran,
anything else is an error, with ``-1`` a timeout and ``-2`` scripts disabled on the host. A
pending run can be cancelled; orbit never receives a cancelled run.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class ScriptKind(models.TextChoices):
    SCRIPT = "script", "Script"
    LOCK = "lock", "Lock"
    UNLOCK = "unlock", "Unlock"
    WIPE = "wipe", "Wipe"


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RAN = "ran", "Ran"
    ERROR = "error", "Error"
    CANCELLED = "cancelled", "Cancelled"


EXIT_TIMEOUT = -1
EXIT_DISABLED = -2


class Script(models.Model):
    """A saved script, global (``team`` empty) or in one team's library; names are unique per team."""

    team = models.ForeignKey(
        "hosts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="scripts"
    )
    name = models.CharField(
        max_length=255, help_text="A file name ending in .sh (macOS, Linux) or .ps1 (Windows)."
    )
    contents = models.TextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The team's id, or 0 for global scripts: names are unique per scope on every database (a
    # unique (team, name) lets global duplicates through, NULLs being distinct, and MariaDB has
    # no partial unique index to close that gap).
    scope = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["scope", "name"], name="unique_script_name_per_scope")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.scope = self.team_id or 0
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "scope" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "scope"]
        super().save(*args, **kwargs)

    @property
    def platforms(self) -> str:
        return "Windows" if self.name.lower().endswith(".ps1") else "macOS, Linux"


def new_execution_id() -> str:
    return str(uuid.uuid4())


class ScriptRun(models.Model):
    """One script queued for, running on, or run on one host (Fleet's host script result)."""

    execution_id = models.CharField(max_length=36, unique=True, default=new_execution_id, editable=False)
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="script_runs")
    kind = models.CharField(max_length=8, choices=ScriptKind.choices, default=ScriptKind.SCRIPT)
    script = models.ForeignKey(Script, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    script_name = models.CharField(
        max_length=255, blank=True, help_text="The saved script's name when queued."
    )
    contents = models.TextField()
    timeout = models.PositiveIntegerField(help_text="Seconds the host lets the script run.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sync_request = models.BooleanField(default=False)
    # Set while the host holds the script (orbit asked for it); a cancelled run is never sent.
    sent_at = models.DateTimeField(null=True, blank=True)
    cancelled = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True)
    runtime = models.PositiveIntegerField(default=0, help_text="Seconds the script ran.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The orbit config's "pending for this host" in queue order, read on every check-in.
            models.Index(
                fields=["host", "exit_code", "cancelled", "created_at"], name="scriptrun_host_queue"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.script_name or self.execution_id} on host {self.host_id}"

    @property
    def status(self) -> str:
        if self.cancelled:
            return RunStatus.CANCELLED
        if self.exit_code is None:
            return RunStatus.PENDING
        return RunStatus.RAN if self.exit_code == 0 else RunStatus.ERROR

    @property
    def timed_out(self) -> bool:
        return self.exit_code == EXIT_TIMEOUT
