"""Who is asking: the host behind a device token, for the device API and the My device page alike.

The order is what keeps it cheap: the address's ban is read first (one cache read, so a banned
address costs no query), then the token is looked up by digest (one indexed query that also
checks its validity window), and only a failure writes, to the address's failure count.
"""

from __future__ import annotations

from django.http import HttpRequest

from agentapi.wire import client_ip
from devices import throttle, tokens
from hosts.models import Host

# Fleet's wording (server/service/devices.go, AuthenticateDevice).
INVALID_TOKEN = "authentication error: invalid device authentication token"
TOO_MANY_FAILURES = "too many failed authentication attempts from this address; try again later"


class DeviceAuthError(Exception):
    """The request cannot go on: 401 (unknown or expired token) or 429 (banned address)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def authenticate(request: HttpRequest, token: str) -> Host:
    """The host whose current (or just-rotated) token is ``token``, with its team and seen time.

    Database errors propagate: an outage is the server's problem (503), not a bad token, and
    must not count against the address.
    """
    address = client_ip(request)
    wait = throttle.banned_for(address)
    if wait:
        raise DeviceAuthError(429, TOO_MANY_FAILURES, retry_after=wait)
    row = tokens.find(token)
    if row is None:
        throttle.record_failure(address)
        raise DeviceAuthError(401, INVALID_TOKEN)
    return row.host
