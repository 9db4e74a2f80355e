"""SCEP challenges that name a team.

The enrollment profile for a team carries ``"<team id>.<MAC>"``, the MAC keyed by a secret derived
from the CA's key; the SCEP endpoint recomputes it. So a device can only get an identity for a team
whose profile it was given, the certificate records that team, and a Mac enrolled with a team's
profile lands in that team. Nothing extra is stored: a new CA invalidates every old challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from hosts.models import Team
from mdm import conf
from mdm.pki.scep import ChallengeRejected

_PURPOSE = b"fleet-mdm-scep-challenge"
MAX_LENGTH = 128


def _mac(team_id: int) -> str:
    key = conf.ca().derive_secret(_PURPOSE)
    digest = hmac.new(key, f"team:{team_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def challenge_for(team_id: int | None) -> str:
    return f"{team_id or 0}.{_mac(team_id or 0)}"


def team_of_challenge(challenge: str) -> int | None:
    """The team id a challenge names (``None`` for no team); :class:`ChallengeRejected` otherwise."""
    if not isinstance(challenge, str) or len(challenge) > MAX_LENGTH:
        raise ChallengeRejected("bad challenge")
    team_part, _, mac = challenge.partition(".")
    if not team_part.isdigit() or not hmac.compare_digest(mac.encode(), _mac(int(team_part)).encode()):
        raise ChallengeRejected("bad challenge")
    team_id = int(team_part)
    if team_id and not Team.objects.filter(pk=team_id).exists():
        raise ChallengeRejected("the challenge's team no longer exists")
    return team_id or None
