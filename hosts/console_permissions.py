"""Django permissions derived from Fleet roles: one rule for the console, REST and WebSockets.

The console is the Django admin, which asks ``user.has_perm("app.action_model")`` before it shows
a page or a button. Instead of Django's per-user permission rows (which an admin would have to
set by hand, and which could contradict the user's Fleet role), :class:`FleetRoleBackend` answers
from the table below: a model action is allowed when the user holds one of its roles, globally or
on some team. The ModelAdmins then narrow objects to the user's teams (``scope_queryset``,
``has_team_role``), exactly as the REST viewsets do with the same role sets.

Users with only the gitops role hold no console permission: gitops is an API writer for
config-as-code (fleet-reference §5.2).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend

from hosts.choices import Role
from hosts.permissions import (
    ADMIN_ROLES,
    HOST_READ_ROLES,
    SECRET_READ_ROLES,
    has_any_role,
    roles_of,
    visible_team_ids,
)

# Everyone who may open the console: every role but gitops.
CONSOLE_ROLES = HOST_READ_ROLES
WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})

_VIEW, _ADD, _CHANGE, _DELETE = "view", "add", "change", "delete"


def _rules(view: frozenset[str], write: frozenset[str], *, add: frozenset[str] | None = None) -> dict:
    return {_VIEW: view | write, _ADD: add if add is not None else write, _CHANGE: write, _DELETE: write}


# "app_label.model" -> action -> roles that may do it (on their teams' objects, for team roles).
MODEL_RULES: dict[str, dict[str, frozenset[str]]] = {
    "hosts.host": {**_rules(CONSOLE_ROLES, WRITE_ROLES), _ADD: frozenset()},  # hosts come from enrolment
    "hosts.team": _rules(CONSOLE_ROLES, ADMIN_ROLES),
    "hosts.enrollsecret": _rules(SECRET_READ_ROLES, ADMIN_ROLES),
    "hosts.fleetsettings": _rules(ADMIN_ROLES, ADMIN_ROLES),
    "hosts.label": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "queries.query": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "queries.queryreport": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "packs.pack": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "packs.scheduledquery": _rules(CONSOLE_ROLES, WRITE_ROLES),
    # Observers may run saved queries marked observer_can_run; campaigns.services decides which.
    "campaigns.campaign": _rules(CONSOLE_ROLES, frozenset(), add=CONSOLE_ROLES),
    # Scripts: admins and maintainers write the library (of their teams); runs are read-only
    # records, and running, cancelling, lock and wipe check the host's team (hostscripts.access).
    "hostscripts.script": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "hostscripts.scriptrun": _rules(CONSOLE_ROLES, frozenset()),
    # The "Agent updates" page: everyone looks; updates/admin.py narrows managing to global admins.
    "updates.agentupdates": {**_rules(CONSOLE_ROLES, ADMIN_ROLES, add=frozenset()), _DELETE: frozenset()},
    # Apple MDM: the APNs certificate page is global admins'; devices and commands are read-only
    # records (sending checks the host's team, mdm.access); profiles are written per team.
    "mdm.pushcertificate": {**_rules(ADMIN_ROLES, ADMIN_ROLES, add=frozenset()), _DELETE: frozenset()},
    "mdm.enrollment": _rules(CONSOLE_ROLES, frozenset()),
    "mdm.command": _rules(CONSOLE_ROLES, frozenset()),
    "mdm.profile": _rules(CONSOLE_ROLES, WRITE_ROLES),
    # Tasks (taskserver.access): tasks and destinations are written per team; agents appear when
    # they connect (no add) and are tagged, switched off or deleted; agent keys are like enroll
    # secrets (admins and maintainers see the list, admins create and delete; a key is shown once).
    "taskserver.task": _rules(CONSOLE_ROLES, WRITE_ROLES),
    "taskserver.taskagent": {**_rules(CONSOLE_ROLES, WRITE_ROLES), _ADD: frozenset()},
    "taskserver.agentkey": {**_rules(SECRET_READ_ROLES, ADMIN_ROLES), _CHANGE: frozenset()},
    "taskserver.metricdestination": _rules(CONSOLE_ROLES, WRITE_ROLES),
}
# Users and invitations (the users app) check roles themselves (users/permissions.py): global
# admins manage everyone, team admins the users of their teams.
# Fleet-wide objects: a role on some team is not enough, it must be a global role.
GLOBAL_ONLY = frozenset({"hosts.fleetsettings", "mdm.pushcertificate"})
# Apps whose models are all readable by every console role and written by no one in the console
# (software inventory, the audit trail).
READ_ONLY_APPS = frozenset({"software", "activities"})


def rules_for(app_label: str, model: str) -> dict[str, frozenset[str]] | None:
    """The action -> roles table of one model, or ``None`` when the console does not show it."""
    rules = MODEL_RULES.get(f"{app_label}.{model}")
    if rules is None and app_label in READ_ONLY_APPS:
        return {_VIEW: CONSOLE_ROLES}
    return rules


def _holds(user: Any, label: str, roles: frozenset[str]) -> bool:
    if label in GLOBAL_ONLY:
        return visible_team_ids(user, roles) is None
    return has_any_role(user, roles)


def may_use_console(user: Any) -> bool:
    """Whether the user may log in to the console at all (an active user with a console role)."""
    return bool(user and user.is_active and user.is_authenticated and has_any_role(user, CONSOLE_ROLES))


def _split(perm: str) -> tuple[str, str, str] | None:
    """``"queries.change_query"`` -> ``("queries", "change", "query")``."""
    app_label, _, codename = perm.partition(".")
    action, _, model = codename.partition("_")
    if not (app_label and action and model):
        return None
    return app_label, action, model


class FleetRoleBackend(ModelBackend):
    """Authenticates like Django's ``ModelBackend``; permissions come from Fleet roles only.

    Django's own permission rows and groups are ignored, so that nothing but the Fleet role
    decides what a user may do (a hand-given ``change_label`` does not make an observer a
    writer). Object checks stay in the ModelAdmins and services, which know each object's team.
    """

    def get_user_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def get_group_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if obj is not None or not self.user_can_authenticate(user_obj) or not roles_of(user_obj).any:
            return set()
        held = set()
        for label, rules in MODEL_RULES.items():
            app_label, model = label.split(".")
            allowed = (action for action, roles in rules.items() if _holds(user_obj, label, roles))
            held.update(f"{app_label}.{action}_{model}" for action in allowed)
        return held

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if obj is not None or not user_obj.is_active:
            return False
        parts = _split(perm)
        if parts is None:
            return False
        app_label, action, model = parts
        rules = rules_for(app_label, model)
        roles = rules.get(action) if rules else None
        return bool(roles) and _holds(user_obj, f"{app_label}.{model}", roles)

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        if not user_obj.is_active:
            return False
        if app_label in READ_ONLY_APPS:
            return has_any_role(user_obj, CONSOLE_ROLES)
        return any(
            has_any_role(user_obj, rules[_VIEW])
            for label, rules in MODEL_RULES.items()
            if label.split(".")[0] == app_label
        )
