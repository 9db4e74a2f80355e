"""Logins as activities (Fleet's ``user_logged_in`` and ``user_failed_login``).

Django announces every login, console or API token, and every refused password through its auth
signals (``fleet.api_auth`` sends ``user_logged_in`` for tokens too), so these receivers cover
every surface at once; ``activities.apps`` connects them. They only record: login itself is
decided elsewhere (django-axes, the backends), and a recording problem never blocks a login.
"""

from __future__ import annotations

import logging
from typing import Any

from activities.choices import ActivityType
from activities.recording import record

logger = logging.getLogger(__name__)


def _address(request: Any) -> str:
    from fleet.api_auth import client_address

    try:
        return client_address(request)[:45] if request is not None else ""
    except Exception:  # a synthetic request (``Client.force_login``) has no peer
        return ""


def logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is None or user.pk is None:
        return
    try:
        address = _address(request)
        record(
            ActivityType.USER_LOGGED_IN,
            user,
            actor=user,
            team=None,
            details={"public_ip": address},
        )
    except Exception:
        logger.exception("could not record a login")


def login_failed(
    sender: Any, credentials: dict[str, Any] | None = None, request: Any = None, **kwargs: Any
) -> None:
    credentials = credentials or {}
    username = str(credentials.get("username") or credentials.get("email") or "")[:255]
    try:
        record(
            ActivityType.USER_FAILED_LOGIN,
            actor=None,
            team=None,
            object_type="user",
            object_name=username,
            details={"username": username, "public_ip": _address(request)},
        )
    except Exception:
        logger.exception("could not record a failed login")
