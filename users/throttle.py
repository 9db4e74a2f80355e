"""A per-address rate on the pages opened by a link (invitation, set-password).

Those links carry 32 random bytes (invitations) or an HMAC (set-password), so guessing one is
hopeless; the rate is there to keep a client from hammering the pages (each accepted form hashes
a password, which is deliberately slow) and to make scanning visibly pointless. Every request
from an address counts, good token or not: a person accepting an invitation needs a handful.

It is the REST login throttle's mechanism (DRF's ``SimpleRateThrottle``: timestamps per key in
the cache, so it is shared by every process when the cache is Redis), keyed by the same client
address django-axes uses (``fleet.api_auth.client_address``), at ``LINK_PAGE_RATE``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle

from fleet.api_auth import client_address


class LinkPageThrottle(SimpleRateThrottle):
    scope = "link_page"

    def get_rate(self) -> str:
        return settings.LINK_PAGE_RATE

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}


def retry_after(request: HttpRequest) -> int | None:
    """``None`` if the request may go on, else the seconds the address must wait."""
    throttle = LinkPageThrottle()
    if throttle.allow_request(request, None):
        return None
    return max(1, int(throttle.wait() or 1))
