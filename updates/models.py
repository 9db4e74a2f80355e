"""The console's "Agent updates" page hangs on a model with no rows.

The repository itself is files (``updates.repository``): its targets and metadata are read from
disk when the page is shown, so the page can never disagree with what agents get. Django's
admin still needs a model to list the page and to ask the Fleet roles who may see it
(``hosts.console_permissions``: every console role may look, global admins may manage), so this
one exists with no table (``managed = False``).
"""

from django.db import models


class AgentUpdates(models.Model):
    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = verbose_name_plural = "agent updates"

    def __str__(self) -> str:
        return "agent updates"
