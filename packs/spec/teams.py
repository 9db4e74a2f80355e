"""``kind: team``, ``kind: enroll_secret`` and ``kind: config`` (agent options).

Teams are created or updated by name, with Fleet's reserved names refused
(``hosts.services.validate_team_name``). A team's ``secrets`` and the global ``enroll_secret``
list *replace* the secrets of their scope, as in Fleet; a team spec without ``secrets`` leaves
the team's secrets alone, because wiping credentials by omission would lock hosts out. A secret
may move between scopes in one apply, but never belongs to two.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from hosts.agent_options import default_agent_options, validate_agent_options
from hosts.models import EnrollSecret, FleetSettings, Team
from hosts.services import validate_enroll_secret, validate_team_name
from packs.spec import values
from packs.spec.context import Context
from packs.spec.documents import Document
from packs.spec.plan import CREATE, DELETE, UNCHANGED, UPDATE, Change, compare

TEAM_KEYS = {"name", "description", "agent_options", "secrets"}
SECRET_KEYS = {"secret", "created_at", "team_id"}


def mask(secret: str) -> str:
    """Enough of a secret to recognise it in a plan without printing it."""
    return (secret[:4] if len(secret) > 8 else secret[:2]) + "…"


def agent_options(value: Any, key: str = "agent_options") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise values.Invalid(f"{key} must be a mapping")
    problem = values.json_problem(value, key)
    if problem:
        raise values.Invalid(problem)
    problems = validate_agent_options(value)
    if problems:
        raise values.Invalid(f"{key}: {'; '.join(problems)}")
    return value


def secret_list(spec: dict[str, Any], key: str = "secrets") -> list[str]:
    """``[{secret: ...}, ...]`` (Fleet's form) or plain strings; trimmed, each at most once."""
    items = spec.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise values.Invalid(f"{key} must be a list of {{secret: ...}} entries")
    secrets: list[str] = []
    for position, item in enumerate(items):
        entry = item if isinstance(item, dict) else {"secret": item}
        secret = values.text(entry, "secret", required=True, max_length=255)
        if secret in secrets:
            raise values.Invalid(f"{key}[{position}]: the secret {mask(secret)} is listed twice")
        secrets.append(secret)
    if len(secrets) > settings.MAX_ENROLL_SECRETS_PER_SCOPE:
        raise values.Invalid(
            f"{key}: {len(secrets)} secrets, more than the {settings.MAX_ENROLL_SECRETS_PER_SCOPE} allowed"
        )
    return secrets


def plan_teams(docs: list[Document], ctx: Context) -> None:
    seen: dict[str, Document] = {}
    for doc in docs:
        spec = doc.spec.get("team")
        if not isinstance(spec, dict):
            ctx.error(doc, "spec.team must be a mapping with the team's name")
            continue
        try:
            name = values.text(spec, "name", required=True, max_length=255)
            wanted = {
                "description": values.text(spec, "description"),
                "agent_options": (
                    agent_options(spec["agent_options"]) if spec.get("agent_options") is not None else None
                ),
            }
            secrets = secret_list(spec) if "secrets" in spec else None
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            ctx.planned_teams.add(doc.name.strip())  # so that queries of this team do not report it too
            continue
        existing = ctx.teams.get(name)
        try:
            validate_team_name(name, exclude_id=existing.pk if existing else None)
        except ValidationError as exc:
            ctx.error(doc, " ".join(exc.messages))
            continue
        if ctx.repeated(seen, name, "team", name, doc):
            continue
        ctx.planned_teams.add(name)
        ctx.ignore("team", set(spec) - TEAM_KEYS)
        current = None
        if existing:
            current = {"description": existing.description, "agent_options": existing.agent_options}
        change = compare("team", name, doc.where, current, wanted)
        ctx.plan.changes.append(change)
        if secrets is not None:
            ctx.secret_scopes[name] = (doc, secrets)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save_team, name, wanted))


def _save_team(name: str, wanted: dict[str, Any]) -> None:
    team = Team.objects.filter(name=name).first() or Team(name=name)
    for key, value in wanted.items():
        setattr(team, key, value)
    team.save()


def plan_global_secrets(docs: list[Document], ctx: Context) -> None:
    for doc in docs[1:]:
        ctx.error(doc, f"the global enroll secrets are already given in {docs[0].where}")
    for doc in docs[:1]:
        if not isinstance(doc.spec.get("secrets"), list):
            ctx.error(doc, "spec.secrets must be a list (an empty list removes every global secret)")
            continue
        try:
            ctx.secret_scopes[None] = (doc, secret_list(doc.spec))
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
        ctx.ignore("enroll_secret", set(doc.spec) - {"secrets"})
        for item in doc.spec["secrets"]:
            if isinstance(item, dict):
                ctx.ignore("enroll_secret", set(item) - SECRET_KEYS)


def _scope_name(scope: str | None) -> str:
    return "the global scope" if scope is None else f'team "{scope}"'


def plan_secret_changes(ctx: Context) -> None:
    """Check who owns each secret once every scope's list is known, then plan per scope."""
    if not ctx.secret_scopes:
        return
    current = list(EnrollSecret.objects.order_by("created_at", "id").values_list("secret", "team__name"))
    final = {secret: scope for secret, scope in current if scope not in ctx.secret_scopes}
    moves: dict[str | None, tuple[list[str], list[str]]] = {}
    for scope, (doc, secrets) in ctx.secret_scopes.items():
        clean = True
        for secret in secrets:
            owner = final.get(secret, scope)
            if owner != scope:
                how = "also listed for" if owner in ctx.secret_scopes else "already used by"
                ctx.error(doc, f"the enroll secret {mask(secret)} is {how} {_scope_name(owner)}")
                clean = False
            final[secret] = scope
        if not clean:
            continue
        had = [secret for secret, owner in current if owner == scope]
        added = [secret for secret in secrets if secret not in had]
        removed = [secret for secret in had if secret not in secrets]
        if not had and added:
            action = CREATE
        elif secrets or not removed:
            action = UPDATE if added or removed else UNCHANGED
        else:
            action = DELETE
        change = Change("enroll_secret", "global" if scope is None else scope, action, doc.where)
        if action != UNCHANGED:
            change.fields["secrets"] = ([mask(s) for s in had], [mask(s) for s in secrets])
            moves[scope] = (added, removed)
        ctx.plan.changes.append(change)
    if moves:
        ctx.plan.steps.append(partial(_save_secrets, moves))


def _save_secrets(moves: dict[str | None, tuple[list[str], list[str]]]) -> None:
    # Removals first, so that a secret moving between scopes is free when it is added again.
    EnrollSecret.objects.filter(secret__in=[s for _, removed in moves.values() for s in removed]).delete()
    for scope, (added, _) in moves.items():
        team = None if scope is None else Team.objects.get(name=scope)
        for secret in added:
            EnrollSecret.objects.create(secret=validate_enroll_secret(secret, team), team=team)


def plan_config(docs: list[Document], ctx: Context) -> None:
    """Global settings: ``agent_options`` is applied; Fleet's other settings are reported."""
    for doc in docs[1:]:
        ctx.error(doc, f"the global config is already given in {docs[0].where}")
    for doc in docs[:1]:
        others = sorted(set(doc.spec) - {"agent_options"})
        if others:
            ctx.plan.warnings.append(f"{doc.where}: settings not supported yet, ignored: {', '.join(others)}")
        if "agent_options" not in doc.spec:
            continue
        try:
            wanted = agent_options(doc.spec["agent_options"])
        except values.Invalid as exc:
            ctx.error(doc, str(exc))
            continue
        stored = FleetSettings.objects.filter(pk=1).values_list("agent_options", flat=True).first()
        current = stored if stored is not None else default_agent_options()
        change = compare(
            "config", "agent_options", doc.where, {"agent_options": current}, {"agent_options": wanted}
        )
        ctx.plan.changes.append(change)
        if change.action != UNCHANGED:
            ctx.plan.steps.append(partial(_save_agent_options, wanted))


def _save_agent_options(options: dict[str, Any]) -> None:
    fleet_settings = FleetSettings.load()
    fleet_settings.agent_options = options
    fleet_settings.save(update_fields=["agent_options"])
