"""One row: the installation's anonymous identifier, the console's switch and the sending record."""

from __future__ import annotations

import uuid

from django.db import models


class UsageStatistics(models.Model):
    """Fleet's ``statistics`` row (anonymous identifier, when statistics were last sent) and its
    ``server_settings.enable_analytics`` switch.

    Kept apart from ``hosts.FleetSettings`` because the sender writes it: the settings form saves
    every column of its row, which would overwrite a send recorded meanwhile.
    """

    anonymous_identifier = models.UUIDField(default=uuid.uuid4, editable=False)
    enabled = models.BooleanField(default=True, verbose_name="send anonymous usage statistics")
    # Set by the conditional UPDATE that claims a send (usage.sending): at most one sender at a time.
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "usage statistics"

    def __str__(self) -> str:
        return "Usage statistics"

    @classmethod
    def load(cls) -> UsageStatistics:
        """The row, created (with a new random identifier) on first use."""
        return cls.objects.get_or_create(pk=1)[0]
