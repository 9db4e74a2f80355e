"""Console users and the invitations that create them.

``User`` is a proxy of Django's user model: it gives the console's user pages their own place
(``/admin/users/user/``, next to the invitations) without a new table, so every other app keeps
using ``get_user_model()``.

An ``Invite`` is Fleet's invitation: an email address, the roles the new user will get (one
global role, or one role per team, as ``InviteRole`` rows shaped like ``hosts.UserRole`` so a
deleted team takes its pending role with it) and a token. Only the token's SHA-256 digest is
stored: the link is shown once, to the admin who created it, and a leaked database row does not
let anyone accept it. The token is 32 random bytes, so looking it up by digest needs no
constant-time comparison (there is nothing to guess byte by byte).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone

from hosts.choices import Role
from hosts.models import Team


class User(get_user_model()):  # type: ignore[misc]
    """The console's view of a user (a proxy: same table, same rows as ``get_user_model()``)."""

    class Meta:
        proxy = True
        verbose_name = "user"
        verbose_name_plural = "users"


class InviteStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    EXPIRED = "expired", "Expired"
    ACCEPTED = "accepted", "Accepted"


class InviteQuerySet(models.QuerySet["Invite"]):
    def pending(self) -> InviteQuerySet:
        return self.filter(accepted_at__isnull=True, expires_at__gt=timezone.now())

    def with_status(self, status: str) -> InviteQuerySet:
        now = timezone.now()
        if status == InviteStatus.ACCEPTED:
            return self.filter(accepted_at__isnull=False)
        if status == InviteStatus.EXPIRED:
            return self.filter(accepted_at__isnull=True, expires_at__lte=now)
        return self.filter(accepted_at__isnull=True, expires_at__gt=now)


class Invite(models.Model):
    """An invitation to create a console account with the given roles (Fleet's ``invites``)."""

    email = models.EmailField(max_length=254)
    name = models.CharField(
        max_length=300, blank=True, help_text="Suggested full name; the invitee may change it."
    )
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The account created from this invitation.",
    )

    objects = InviteQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["email"])]
        verbose_name = "invitation"

    def __str__(self) -> str:
        return self.email

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return InviteStatus.ACCEPTED
        if self.expires_at <= timezone.now():
            return InviteStatus.EXPIRED
        return InviteStatus.PENDING


class InviteRole(models.Model):
    """A role the invitee gets: globally (no team) or on one team, like ``hosts.UserRole``."""

    invite = models.ForeignKey(Invite, on_delete=models.CASCADE, related_name="roles")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=32, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["invite", "team"], name="unique_invite_role_per_team")]

    def __str__(self) -> str:
        return f"{self.role} on {self.team or 'all teams'}"
