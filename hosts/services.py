"""The write path for teams, enroll secrets and hosts, shared by console, REST and commands."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

import activities
from activities import events as activity_events
from hosts import nodekeys
from hosts.models import EnrollSecret, Host, Team

RESERVED_TEAM_NAMES = frozenset({"no team", "all teams", "unassigned", "all fleets"})
_SECRET_ALPHABET = string.ascii_letters + string.digits


def generate_enroll_secret(length: int = 24) -> str:
    """A random enroll secret of Fleet's default length."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def validate_team_name(name: str, exclude_id: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A team needs a name."})
    if name.lower() in RESERVED_TEAM_NAMES:
        raise ValidationError({"name": f'"{name}" is reserved.'})
    if Team.objects.filter(name=name).exclude(id=exclude_id).exists():
        raise ValidationError({"name": f'A team named "{name}" already exists.'})
    return name


@transaction.atomic
def create_team(name: str, description: str = "", with_secret: bool = True) -> Team:
    """Create a team; like Fleet, give it an enroll secret so hosts can join it at once."""
    team = Team.objects.create(name=validate_team_name(name), description=description)
    if with_secret:
        EnrollSecret.objects.create(secret=generate_enroll_secret(), team=team)
    activities.record_created(team)
    return team


def validate_enroll_secret(secret: str, team: Team | None, exclude_id: int | None = None) -> str:
    """Trim and check a secret: non-empty, unique, and at most 50 per scope (Fleet's limit)."""
    secret = (secret or "").strip()
    if not secret:
        raise ValidationError({"secret": "The secret cannot be empty."})
    if len(secret) > 255:
        raise ValidationError({"secret": "The secret is longer than 255 characters."})
    if EnrollSecret.objects.filter(secret=secret).exclude(id=exclude_id).exists():
        raise ValidationError({"secret": "This secret is already in use."})
    in_scope = EnrollSecret.objects.filter(team=team).exclude(id=exclude_id).count()
    if in_scope >= settings.MAX_ENROLL_SECRETS_PER_SCOPE:
        scope = f"team {team.name}" if team else "the global scope"
        raise ValidationError(
            {"secret": f"{scope} already has {settings.MAX_ENROLL_SECRETS_PER_SCOPE} secrets, the maximum."}
        )
    return secret


def add_enroll_secret(secret: str | None = None, team: Team | None = None) -> EnrollSecret:
    """Add an enroll secret (generated when none is given)."""
    value = validate_enroll_secret(secret if secret is not None else generate_enroll_secret(), team)
    created = EnrollSecret.objects.create(secret=value, team=team)
    activities.record_created(created)
    return created


def request_refetch(host_ids: Iterable[int]) -> int:
    """Ask hosts to send their details at their next check-in (Fleet's "Refetch")."""
    ids = list(host_ids)
    count = Host.objects.filter(id__in=ids).update(refetch_requested=True)
    nodekeys.forget_hosts(ids)
    activity_events.hosts_refetched(ids)
    return count


def transfer_hosts(host_ids: Iterable[int], team: Team | None) -> int:
    """Move hosts to a team (or to no team); their config follows at the next check-in."""
    ids = list(host_ids)
    count = Host.objects.filter(id__in=ids).update(team=team)
    nodekeys.forget_hosts(ids)
    activity_events.hosts_transferred(ids, team)
    return count


def set_agent_options(team: Team | None, options: dict | None) -> None:
    """Replace the global (``team=None``) or a team's agent options; configs follow at once.

    ``None`` for a team removes its options, so it falls back to the global ones.
    """
    from hosts.agent_options import validate_agent_options
    from hosts.models import FleetSettings
    from packs import config as osquery_config

    if options is not None or team is None:
        problems = validate_agent_options(options if options is not None else {})
        if problems:
            raise ValidationError({"agent_options": problems})
    if team is None:
        fleet_settings = FleetSettings.load()
        before = fleet_settings.agent_options
        fleet_settings.agent_options = options or {}
        fleet_settings.save(update_fields=["agent_options"])
    else:
        before = team.agent_options
        team.agent_options = options
        team.save(update_fields=["agent_options"])
    activity_events.agent_options_edited(team, before, options if team else options or {})
    # Now, and again after commit, so a request racing the transaction cannot re-cache stale data.
    osquery_config.invalidate()
    transaction.on_commit(osquery_config.invalidate)


def delete_hosts(host_ids: Iterable[int]) -> int:
    """Delete hosts and drop their cached node-key states, so their agents must enroll again."""
    ids = list(host_ids)
    key_hashes = list(Host.objects.filter(id__in=ids).values_list("node_key_hash", flat=True))
    with activity_events.deleting(Host.objects.filter(id__in=ids)):
        deleted = Host.objects.filter(id__in=ids).delete()[1].get(Host._meta.label, 0)
    nodekeys.forget(key_hashes)
    return deleted
