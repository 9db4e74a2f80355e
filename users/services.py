"""The write path for users, roles and invitations: the console, the invitation page and
``manage.py user`` all go through here, so they enforce the same rules.

Rules kept here, whoever acts:

- roles are one global role or one role per team (``hosts.permissions.check_role_assignment``);
- the last active global admin can be neither demoted nor deactivated, so the fleet always keeps
  someone who can manage it. Superusers count as global admins (``roles_of``). The check locks
  the admins' rows first, so two admins demoting each other at the same moment cannot both pass;
- nobody deactivates themselves (an admin would lock themselves out mid-session);
- deactivating a user also deletes their API tokens and sessions, and setting someone's password
  deletes their API tokens (their sessions end by themselves: Django signs each session with the
  password hash). Deactivation alone already stops both (knox and Django refuse inactive users),
  but deleting them means a later reactivation does not bring old credentials back;
- every password goes through Django's validators (``AUTH_PASSWORD_VALIDATORS``: Fleet's 12
  characters with a number and a symbol, plus the common-password, numeric and similarity
  checks). ``User.objects.create_user`` does not validate, so nothing here calls it with a
  password that has not been checked.

Who may ask for what (a team admin only on their teams...) is decided by ``users.permissions``
before these functions are called; ``scope`` tells ``set_roles`` which teams the caller controls.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model, password_validation
from django.contrib.auth.base_user import BaseUserManager
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from knox.models import AuthToken

import activities
from activities.choices import ActivityType
from hosts.choices import Role
from hosts.models import Team, UserRole
from hosts.permissions import check_role_assignment, forget_roles
from users.models import Invite, InviteRole

# team id (None: global) -> role
RoleMap = dict[int | None, str]

NOT_YOURSELF = "You cannot deactivate your own account."
OUTSIDE_SCOPE = "You can only set roles on teams you administer."
NO_ROLE = "Choose a role: one global role, or a role on at least one team."


# --- reading ------------------------------------------------------------------------------------


def role_map(user: Any) -> RoleMap:
    """The user's role rows as ``{team_id or None: role}``."""
    if user.pk is None:
        return {}
    return dict(UserRole.objects.filter(user=user).values_list("team_id", "role"))


def role_label(role: str) -> str:
    return Role(role).label if role in Role.values else role


def describe_roles(
    pairs: Iterable[tuple[str | None, str]], *, superuser: bool = False, hidden: int = 0
) -> str:
    """``"Observer (global)"`` or ``"Maintainer on Engineering, Observer on Sales"``.

    ``pairs`` are (team name or None for global, role); ``hidden`` counts roles on teams the reader
    does not see.
    """
    if superuser:
        return "Admin (global, superuser)"
    pairs = sorted(pairs, key=lambda pair: (pair[0] is not None, (pair[0] or "").lower()))
    parts = [
        f"{role_label(role)} (global)" if team is None else f"{role_label(role)} on {team}"
        for team, role in pairs
    ]
    if hidden:
        parts.append(f"{hidden} other team{'s' if hidden != 1 else ''}")
    return ", ".join(parts) if parts else "No role"


def describe_rows(rows: Iterable[Any], *, superuser: bool = False, hidden: int = 0) -> str:
    """``describe_roles`` of ``UserRole`` or ``InviteRole`` rows (their ``team`` selected)."""
    pairs = ((row.team.name if row.team_id else None, row.role) for row in rows)
    return describe_roles(pairs, superuser=superuser, hidden=hidden)


def describe_user_roles(user: Any) -> str:
    rows = UserRole.objects.filter(user=user).select_related("team")
    return describe_rows(rows, superuser=user.is_superuser)


def active_global_admins() -> QuerySet:
    """Active users who are global admins: superusers, or holders of the global admin role."""
    admins = UserRole.objects.filter(team__isnull=True, role=Role.ADMIN).values("user_id")
    return get_user_model().objects.filter(Q(is_superuser=True) | Q(pk__in=admins), is_active=True)


def _lock_global_admins() -> list[int]:
    """Lock every active global admin's row (in id order), serialising demotions and deactivations."""
    return list(active_global_admins().select_for_update().order_by("pk").values_list("pk", flat=True))


def _last_admin_message(user: Any, doing: str) -> str:
    return (
        f'"{user.get_username()}" is the last active global admin and cannot be {doing}: '
        "make another user a global admin first."
    )


def _ensure_other_admin(user: Any, doing: str) -> None:
    if not active_global_admins().exclude(pk=user.pk).exists():
        raise ValidationError(_last_admin_message(user, doing), code="last_admin")


# --- roles --------------------------------------------------------------------------------------


def _check_roles(roles: Mapping[int | None, str]) -> RoleMap:
    roles = dict(roles)
    bad = sorted({role for role in roles.values() if role not in Role.values})
    if bad:
        raise ValidationError(
            f"Unknown role {bad[0]!r}: choose one of {', '.join(Role.values)}.", code="bad_role"
        )
    team_ids = {t for t in roles if t is not None}
    if team_ids:
        found = set(Team.objects.filter(pk__in=team_ids).values_list("pk", flat=True))
        if team_ids - found:
            raise ValidationError("That team no longer exists.", code="unknown_team")
    check_role_assignment(roles.keys())
    return roles


def plan_roles(user: Any, roles: Mapping[int | None, str], *, scope: Iterable[int] | None = None) -> RoleMap:
    """The user's roles once those within ``scope`` are replaced by ``roles``; raises ``ValidationError``.

    ``scope`` is the teams the caller controls (``None``: every team and the global role). Roles
    outside it are kept as they are, so a team admin's edit never touches another team's role.
    """
    scope = None if scope is None else frozenset(scope)
    roles = dict(roles)
    if scope is not None and any(team is None or team not in scope for team in roles):
        raise ValidationError(OUTSIDE_SCOPE, code="outside_scope")
    current = role_map(user)
    kept = {} if scope is None else {t: r for t, r in current.items() if t is None or t not in scope}
    final = _check_roles({**kept, **roles})
    was_admin = current.get(None) == Role.ADMIN
    if user.pk and user.is_active and not user.is_superuser and was_admin and final.get(None) != Role.ADMIN:
        _ensure_other_admin(user, "demoted")
    return final


@dataclass(frozen=True)
class RoleChange:
    team: Team | None
    old: str | None
    new: str | None

    def __str__(self) -> str:
        where = f"on {self.team.name}" if self.team else "globally"
        if self.new is None:
            return f"removed {role_label(self.old or '')} {where}"
        return f"{role_label(self.new)} {where}"


def set_roles(
    user: Any, roles: Mapping[int | None, str], *, scope: Iterable[int] | None = None, actor: Any = None
) -> list[RoleChange]:
    """Give the user exactly ``roles`` within ``scope`` (see ``plan_roles``); returns what changed."""
    with transaction.atomic():
        _lock_global_admins()
        final = plan_roles(user, roles, scope=scope)
        current = role_map(user)
        removed = [t for t in current if t not in final]
        changed = {t: r for t, r in final.items() if current.get(t) != r}
        if removed:
            UserRole.objects.filter(user=user).filter(
                Q(team_id__in=[t for t in removed if t is not None])
                | (Q(team__isnull=True) if None in removed else Q(pk__in=[]))
            ).delete()
        for team_id, role in changed.items():
            UserRole.objects.update_or_create(user=user, team_id=team_id, defaults={"role": role})
        teams = Team.objects.in_bulk([t for t in {*removed, *changed} if t is not None])
        changes = [RoleChange(teams.get(t) if t else None, current.get(t), None) for t in removed]
        changes += [RoleChange(teams.get(t) if t else None, current.get(t), r) for t, r in changed.items()]
        for change in changes:
            _record_role_change(user, change, actor)
    forget_roles(user)
    if actor is not None and actor.pk == user.pk:
        forget_roles(actor)
    return changes


# --- accounts -----------------------------------------------------------------------------------


def clean_username(username: str, *, exclude_id: int | None = None) -> str:
    """Django's username rules, and unique ignoring case (MySQL's collation would say so anyway)."""
    username = (username or "").strip()
    field = get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD)
    if not username:
        raise ValidationError({"username": "Enter a username."})
    try:
        field.run_validators(username)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from exc
    taken = get_user_model().objects.filter(**{f"{field.name}__iexact": username}).exclude(pk=exclude_id)
    if taken.exists():
        raise ValidationError({"username": f'The username "{username}" is already taken.'})
    return username


def clean_email(email: str, *, exclude_id: int | None = None, check_invites: bool = False) -> str:
    """A valid address that no other user has (ignoring case), nor a pending invitation."""
    email = BaseUserManager.normalize_email((email or "").strip())
    if not email:
        raise ValidationError({"email": "Enter an email address."})
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    if get_user_model().objects.filter(email__iexact=email).exclude(pk=exclude_id).exists():
        raise ValidationError({"email": f"A user with the email {email} already exists."})
    if check_invites and Invite.objects.pending().filter(email__iexact=email).exists():
        raise ValidationError({"email": f"{email} already has a pending invitation."})
    return email


def validate_new_password(password: str, user: Any) -> None:
    """Django's validators, with the user's attributes for the similarity check."""
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc


def split_name(name: str) -> tuple[str, str]:
    """``"Mary Ann Smith"`` -> ``("Mary", "Ann Smith")``: ``get_full_name()`` gives it back whole."""
    first, _, last = " ".join((name or "").split()).partition(" ")
    return first, last


def create_user(
    username: str,
    *,
    email: str,
    roles: Mapping[int | None, str],
    name: str = "",
    password: str | None = None,
    actor: Any = None,
    audit: dict[str, Any] | None = None,
) -> Any:
    """Create an active user with ``roles``; no ``password`` means an unusable one (set it by link).

    Raises ``ValidationError`` keyed by field (username, email, password, roles). ``audit`` adds
    details to the ``created_user`` activity.
    """
    model = get_user_model()
    errors: dict[str, list[str]] = {}
    first, last = split_name(name)
    values: dict[str, Any] = {}
    for key, check in (("username", lambda: clean_username(username)), ("email", lambda: clean_email(email))):
        try:
            values[key] = check()
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if len(first) > 150 or len(last) > 150:
        errors["name"] = ["The name is too long."]
    if not roles:
        errors["roles"] = [NO_ROLE]
    else:
        try:
            roles = _check_roles(roles)
        except ValidationError as exc:
            errors["roles"] = exc.messages
    if password is not None:
        draft = model(username=values.get("username", username), email=values.get("email", email))
        draft.first_name, draft.last_name = first, last
        try:
            validate_new_password(password, draft)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        user = model.objects.create_user(values["username"], values["email"], password)
        user.first_name, user.last_name = first, last
        user.save(update_fields=["first_name", "last_name"])
        UserRole.objects.bulk_create(UserRole(user=user, team_id=t, role=r) for t, r in roles.items())
        _record(
            ActivityType.CREATED_USER,
            user,
            actor,
            details={**_user_details(user), "roles": _roles_detail(roles), **(audit or {})},
        )
    return user


def set_password(user: Any, password: str, *, actor: Any = None) -> int:
    """Validate and set a password; the user's API tokens are revoked. Returns how many."""
    validate_new_password(password, user)
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        revoked, _ = AuthToken.objects.filter(user=user).delete()
        details = {**_user_details(user), "api_tokens_revoked": revoked}
        _record(CHANGED_USER_PASSWORD, user, actor, details=details, covers=True)
    return revoked


@dataclass(frozen=True)
class Revoked:
    tokens: int
    sessions: int


def check_can_deactivate(user: Any, *, actor: Any = None, admins: list[int] | None = None) -> None:
    """Raise ``ValidationError`` if ``actor`` may not deactivate ``user`` (themselves, last admin)."""
    if actor is not None and actor.pk == user.pk:
        raise ValidationError(NOT_YOURSELF, code="self")
    if admins is None:
        admins = list(active_global_admins().values_list("pk", flat=True))
    if user.pk in admins and len(admins) == 1:
        raise ValidationError(_last_admin_message(user, "deactivated"), code="last_admin")


def deactivate(user: Any, *, actor: Any = None) -> Revoked:
    """Deactivate a user, delete their API tokens and sessions (not yourself, not the last admin)."""
    check_can_deactivate(user, actor=actor)
    with transaction.atomic():
        check_can_deactivate(user, actor=actor, admins=_lock_global_admins())
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        tokens, _ = AuthToken.objects.filter(user=user).delete()
    sessions = _end_sessions(user)
    forget_roles(user)
    details = {**_user_details(user), "api_tokens_revoked": tokens, "sessions_ended": sessions}
    _record(DEACTIVATED_USER, user, actor, details=details, covers=True)
    return Revoked(tokens=tokens, sessions=sessions)


def activate(user: Any, *, actor: Any = None) -> None:
    """Let a deactivated user log in again (with new credentials: the old ones were deleted)."""
    type(user).objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    forget_roles(user)
    _record(ACTIVATED_USER, user, actor, details=_user_details(user), covers=True)


def _end_sessions(user: Any) -> int:
    """Delete the user's sessions where the session engine keeps them on the server.

    Sessions are not indexed by user, so this reads every unexpired session (a console has few).
    With a cookie or cache-only engine there is nothing to enumerate; the user being inactive
    already makes Django refuse those sessions.
    """
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store_class, "get_model_class", None)
    if get_model is None:
        return 0
    wanted = str(user.pk)
    keys = []
    rows = (
        get_model().objects.filter(expire_date__gt=timezone.now()).values_list("session_key", "session_data")
    )
    for key, data in rows.iterator():
        if store_class().decode(data).get(SESSION_KEY) == wanted:
            keys.append(key)
    for key in keys:
        store_class(key).delete(key)  # also drops a cached copy (cached_db engine)
    return len(keys)


# --- invitations --------------------------------------------------------------------------------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_invite(email: str, roles: Mapping[int | None, str]) -> tuple[str, RoleMap]:
    """The normalised email and roles of a new invitation, or ``ValidationError`` by field."""
    errors: dict[str, list[str]] = {}
    try:
        email = clean_email(email, check_invites=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if not roles:
        errors["roles"] = [NO_ROLE]
    else:
        try:
            roles = _check_roles(roles)
        except ValidationError as exc:
            errors["roles"] = exc.messages
    if errors:
        raise ValidationError(errors)
    return email, dict(roles)


def create_invite(
    email: str, roles: Mapping[int | None, str], *, name: str = "", invited_by: Any = None
) -> tuple[Invite, str]:
    """A new invitation and its token; the token is returned this once (only a digest is kept)."""
    email, roles = validate_invite(email, roles)
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invite = Invite.objects.create(
            email=email,
            name=" ".join(name.split())[:300],
            token_digest=token_digest(token),
            invited_by=invited_by if getattr(invited_by, "pk", None) else None,
            expires_at=timezone.now() + settings.INVITE_TTL,
        )
        InviteRole.objects.bulk_create(InviteRole(invite=invite, team_id=t, role=r) for t, r in roles.items())
        details = {"email": email, "roles": _roles_detail(roles), "expires_at": invite.expires_at.isoformat()}
        _record(INVITED_USER, invite, invited_by, details=details, team=_single_team(roles), covers=True)
    return invite, token


class InviteUnusable(Exception):
    """Why an invitation link cannot be used; the message is shown to whoever holds the link."""


def find_invite(token: str) -> Invite:
    """The usable invitation of ``token``; raises ``InviteUnusable`` saying why not."""
    invite = Invite.objects.filter(token_digest=token_digest(token or "")).first()
    if invite is None:
        raise InviteUnusable("This invitation link is not valid. Check that you copied all of it.")
    if invite.accepted_at is not None:
        raise InviteUnusable("This invitation has already been used. Log in with the account it created.")
    if invite.expires_at <= timezone.now():
        raise InviteUnusable("This invitation has expired. Ask a Fleet admin to invite you again.")
    if not invite.roles.exists():
        raise InviteUnusable("This invitation is no longer valid (its team was deleted). Ask for a new one.")
    return invite


def accept_invite(invite: Invite, *, username: str, name: str, password: str) -> Any:
    """Create the invited user with the invitation's roles and mark it used, in one transaction."""
    with transaction.atomic():
        locked = Invite.objects.select_for_update().get(pk=invite.pk)
        if locked.accepted_at is not None or locked.expires_at <= timezone.now():
            raise InviteUnusable("This invitation has already been used or has expired.")
        roles = dict(locked.roles.values_list("team_id", "role"))
        by = locked.invited_by
        audit = {"invite_id": locked.pk, "invited_by": by.get_username() if by else None}
        user = create_user(
            username, email=locked.email, roles=roles, name=name, password=password, audit=audit
        )
        locked.accepted_at = timezone.now()
        locked.user = user
        locked.save(update_fields=["accepted_at", "user"])
    return user


def revoke_invites(invites: QuerySet, *, actor: Any = None) -> int:
    """Delete invitations (Fleet deletes them too); their links stop working at once."""
    doomed = list(Invite.objects.filter(pk__in=invites.values("pk")).prefetch_related("roles"))
    with transaction.atomic():
        for invite in doomed:
            roles = {row.team_id: row.role for row in invite.roles.all()}
            details = {"email": invite.email, "roles": _roles_detail(roles)}
            _record(DELETED_INVITE, invite, actor, details=details, team=_single_team(roles))
        Invite.objects.filter(pk__in=[invite.pk for invite in doomed]).delete()
    return len(doomed)


def _single_team(roles: Mapping[int | None, str]) -> int | None:
    """The team an invitation belongs to in the trail: its only team, else none (global)."""
    teams = [t for t in roles if t is not None]
    return teams[0] if len(teams) == 1 and len(roles) == 1 else None


# --- activities ---------------------------------------------------------------------------------
# The audit trail (``activities``) names types as Fleet does where Fleet has them; deactivation,
# reactivation, invitations and password resets are this project's own.
INVITED_USER = "invited_user"
DELETED_INVITE = "deleted_invite"
DEACTIVATED_USER = "deactivated_user"
ACTIVATED_USER = "activated_user"
CHANGED_USER_PASSWORD = "changed_user_password"
_UNSET: Any = object()


def _user_details(user: Any) -> dict[str, Any]:
    return {"user_id": user.pk, "user_name": user.get_username(), "user_email": user.email}


def _edit_of(obj: Any) -> list[tuple[str, str, Any]]:
    """The console's generic record of the same request, which an explicit one makes redundant."""
    if isinstance(obj, Invite):
        return [("created_invite", "invite", obj.pk)]
    return [(ActivityType.EDITED_USER, "user", obj.pk)]


def _record(
    kind: str, obj: Any, actor: Any, *, details: dict | None = None, team: Any = _UNSET, covers: bool = False
) -> None:
    """One audit-trail entry; the actor and surface come from the activity context unless given.

    ``covers``: this entry says all there is, so the console's generic record of the same
    request (``edited_user`` with its change message, ``created_invite``) is not written too.
    """
    kwargs: dict[str, Any] = {}
    if actor is not None:
        kwargs["actor"] = actor
    if team is not _UNSET:
        kwargs["team"] = team
    if covers:
        kwargs["covers"] = _edit_of(obj)
    if getattr(obj, "_meta", None) is not None and obj._meta.proxy:
        obj = obj._meta.concrete_model.objects.get(pk=obj.pk)  # the trail describes auth.User
    activities.record(kind, obj, details=details, **kwargs)


def _record_role_change(user: Any, change: RoleChange, actor: Any) -> None:
    details = {**_user_details(user), "role": change.new or change.old}
    if change.team is None:
        deleted, kind = ActivityType.DELETED_USER_GLOBAL_ROLE, ActivityType.CHANGED_USER_GLOBAL_ROLE
    else:
        deleted, kind = ActivityType.DELETED_USER_TEAM_ROLE, ActivityType.CHANGED_USER_TEAM_ROLE
        details.update(team_id=change.team.pk, team_name=change.team.name)
    if change.new is None:
        kind = deleted
    elif change.old is not None:
        details["previous_role"] = change.old
    _record(kind, user, actor, details=details, team=change.team)


def _roles_detail(roles: Mapping[int | None, str]) -> dict[str, str]:
    names = dict(Team.objects.filter(pk__in=[t for t in roles if t]).values_list("pk", "name"))
    return {("global" if t is None else names.get(t, f"team {t}")): r for t, r in roles.items()}
