"""The links this app hands out (invitations, set-password links) and the invitation email.

Links are absolute: from the console they use the address the admin's browser used; from the
command line, where there is no request, ``FLEET_SERVER_URL``.

A set-password link is Django's password-reset token (``default_token_generator``): an HMAC over
the user's id, password hash, last login and email, valid for ``PASSWORD_RESET_TIMEOUT`` (three
days). Nothing is stored, and it stops working as soon as the password is set, since the hash it
covers changes.

Email is sent only when ``EMAIL_HOST`` is configured; otherwise the admin copies the link, which
the console shows once. A mail server that fails does not fail the invitation: the link is still
shown, with a warning.
"""

from __future__ import annotations

import enum
import logging
import smtplib
from typing import Any

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.http import HttpRequest
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from users.models import Invite
from users.services import describe_rows

logger = logging.getLogger(__name__)


def absolute_url(path: str, request: HttpRequest | None = None) -> str:
    if request is not None:
        return request.build_absolute_uri(path)
    return settings.FLEET_SERVER_URL.rstrip("/") + path


def invite_link(token: str, request: HttpRequest | None = None) -> str:
    return absolute_url(reverse("users:accept-invite", args=[token]), request)


def password_setup_link(user: Any, request: HttpRequest | None = None) -> str:
    """A one-time link where ``user`` chooses their password (valid ``PASSWORD_RESET_TIMEOUT``)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return absolute_url(reverse("users:set-password", args=[uid, token]), request)


class MailResult(enum.Enum):
    SENT = "sent"
    NOT_CONFIGURED = "not configured"
    FAILED = "failed"


def email_configured() -> bool:
    return bool(settings.EMAIL_HOST)


def send_invite(invite: Invite, link: str) -> MailResult:
    """Email the invitation link when a mail server is configured."""
    if not email_configured():
        return MailResult.NOT_CONFIGURED
    by = invite.invited_by
    inviter = (by.get_full_name() or by.get_username()) if by else "A Fleet admin"
    roles = describe_rows(invite.roles.select_related("team"))
    body = (
        f"{inviter} invited you to Fleet as: {roles}.\n\n"
        f"Create your account here (the link works once, until {invite.expires_at:%Y-%m-%d %H:%M} UTC):\n\n"
        f"{link}\n"
    )
    try:
        send_mail("You are invited to Fleet", body, None, [invite.email])
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("could not email the invitation for %s: %s", invite.email, exc)
        return MailResult.FAILED
    return MailResult.SENT
