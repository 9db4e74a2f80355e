"""Fleet Desktop's device token: the secret in every My device address, one per host.

orbit picks a random token, writes it where Fleet Desktop reads it and sends it to
``POST /api/fleet/orbit/device_token``; Desktop and the browser then present it in the URL.
Only its SHA-256 digest is stored (a leaked database gives no live token), so a request is
matched by digest, in one indexed lookup that also checks the validity window.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class DeviceToken(models.Model):
    """The host's current token and, for a while after a rotation, the one before it.

    ``updated_at`` moves only when the token changes (setting the same token again must not
    extend its life, as in Fleet). The previous token stays usable until
    ``previous_expires_at``, so a page opened just before a rotation keeps working.
    """

    host = models.OneToOneField(
        "hosts.Host", primary_key=True, on_delete=models.CASCADE, related_name="device_token"
    )
    token_digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the current token.")
    updated_at = models.DateTimeField(help_text="When the current token was set.")
    previous_digest = models.CharField(
        max_length=64, unique=True, null=True, blank=True, help_text="SHA-256 of the token before it."
    )
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"device token of host {self.host_id}"
