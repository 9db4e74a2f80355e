"""Who may manage which users and invitations, in one place for the console and its tests.

Fleet's rules (fleet-reference §5.2: admins have "full control (users, settings, secrets within
scope)"), as this project applies them:

- A **global admin** (superusers included) sees every user and invitation, invites with any role,
  changes anyone's roles, edits accounts (name, email, username), resets passwords and
  deactivates or reactivates users.
- A **team admin** sees the users who hold a role on a team they administer, and the invitations
  whose roles are all on such teams. They may invite new users to those teams, add an existing
  user to them (by exact username or email), and change or remove roles *on those teams only*;
  the user's other roles stay as they are and are not shown. They cannot give a global role,
  edit accounts, reset passwords or deactivate anyone: an account can hold roles on teams the team
  admin does not control, so taking it over would reach beyond their teams.
- Everyone else (maintainers, observers, gitops) has no user management at all (403).
- Superusers are a command-line matter (``createsuperuser``, ``changepassword``): only another
  superuser may edit or deactivate one in the console, and their roles are implicit (global
  admin), so the console does not edit them.

The invariants that hold whoever acts (nobody deactivates themselves, the last active global
admin stays) live in ``users.services``, so the command obeys them too.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from hosts.models import UserRole
from hosts.permissions import ADMIN_ROLES, has_any_role, visible_team_ids
from users.models import Invite, InviteRole


def managed_team_ids(actor: Any) -> frozenset[int] | None:
    """``None`` for a global admin (every user, global roles too); else the teams they administer."""
    return visible_team_ids(actor, ADMIN_ROLES)


def may_manage_users(actor: Any) -> bool:
    """Whether the user-management pages open at all: an admin, globally or of some team."""
    return has_any_role(actor, ADMIN_ROLES)


def is_global_admin(actor: Any) -> bool:
    return managed_team_ids(actor) is None


def scope_users(queryset: QuerySet, actor: Any) -> QuerySet:
    """The users the actor may see: all for a global admin, their teams' members for a team admin."""
    scope = managed_team_ids(actor)
    if scope is None:
        return queryset
    if not scope:
        return queryset.none()
    return queryset.filter(pk__in=UserRole.objects.filter(team_id__in=scope).values("user_id"))


def scope_invites(queryset: QuerySet, actor: Any) -> QuerySet:
    """Invitations the actor may see and revoke: those whose every role is on their teams."""
    scope = managed_team_ids(actor)
    if scope is None:
        return queryset
    if not scope:
        return queryset.none()
    outside = InviteRole.objects.exclude(team_id__in=scope) | InviteRole.objects.filter(team__isnull=True)
    return queryset.filter(roles__team_id__in=scope).exclude(pk__in=outside.values("invite_id")).distinct()


def may_edit_account(actor: Any, user: Any) -> bool:
    """Name, email, username, password and active flag: global admins; superusers by superusers."""
    return is_global_admin(actor) and (actor.is_superuser or not user.is_superuser)


def may_change_roles(actor: Any, user: Any) -> bool:
    """Whether the actor may change some of the user's roles (a superuser's are implicit: no)."""
    if user.is_superuser:
        return False
    scope = managed_team_ids(actor)
    if scope is None:
        return True
    return bool(scope) and UserRole.objects.filter(user=user, team_id__in=scope).exists()


def may_manage_invite(actor: Any, invite: Invite) -> bool:
    if managed_team_ids(actor) is None:
        return True
    return scope_invites(Invite.objects.filter(pk=invite.pk), actor).exists()
