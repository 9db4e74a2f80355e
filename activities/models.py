"""The audit trail: one immutable row per change, live query or login.

An :class:`Activity` says who (``actor`` and the name and email copied at the time), when, what
(``type``, the object, ``details``: before/after values of an edit, the SQL and targets of a live
query, counts of a bulk operation), from which surface, and for which team (who may read it).

Rows are never changed or deleted by the application: ``save()`` refuses an existing row,
``delete()`` refuses, and so do the queryset's ``update()`` and ``delete()``. The actor and the
team are foreign keys *without* database constraints or ``on_delete`` actions (``DO_NOTHING``):
deleting a user or a team writes nothing here, so the trail keeps the id they had (filters by
``actor`` still find a deleted user's activities) and the copied names keep it readable.

:class:`AuditLogOutbox` holds activities still to be forwarded to the audit log destinations
(``activities.forwarding``); it is written in the same transaction as the activity, so a change
that rolls back is never forwarded, and a destination outage loses nothing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from activities.choices import Surface


class ImmutableActivityError(RuntimeError):
    """Activities are written once; changing or deleting one is refused."""


class ActivityQuerySet(models.QuerySet):
    """Inserts and reads only: ``update()`` and ``delete()`` raise :class:`ImmutableActivityError`."""

    def update(self, **kwargs: Any) -> int:
        raise ImmutableActivityError("activities cannot be changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableActivityError("activities cannot be deleted")

    update.queryset_only = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]


class Activity(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="The user who acted (the id stays after the user is deleted).",
    )
    actor_name = models.CharField(max_length=255, blank=True, help_text="Username at the time.")
    actor_email = models.CharField(max_length=254, blank=True)
    type = models.CharField(max_length=64, db_index=True)
    surface = models.CharField(max_length=16, choices=Surface.choices, default=Surface.SYSTEM)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_name = models.CharField(max_length=255, blank=True)
    team = models.ForeignKey(
        "hosts.Team",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="The team it concerns (decides who may read it); empty for global activities.",
    )
    client_address = models.CharField(max_length=45, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = ActivityQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "activities"
        indexes = [models.Index(fields=["object_type", "object_id"], name="activity_object")]

    def __str__(self) -> str:
        who = self.actor_name or "Fleet"
        return f"{who} {self.type} {self.object_name}".strip()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise ImmutableActivityError("activities cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableActivityError("activities cannot be deleted")


class AuditLogOutbox(models.Model):
    """An activity's audit log line waiting for the destinations (deleted once delivered)."""

    activity_id = models.BigIntegerField(db_index=True)
    line = models.TextField(help_text="The JSON line as forwarded.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"audit line of activity {self.activity_id}"
