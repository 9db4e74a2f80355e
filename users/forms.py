"""Forms of the user pages, the invitations and the invitation page; rules come from
``users.services`` so the console, the invitation page and the command agree.

Roles are edited as Fleet's user page does: one "Global role" choice and one choice per team
(empty: no role there). A form only gets the fields its reader may use: a team admin sees no
global role and only the teams they administer (``users.permissions``). Those fields are
declared on a class built per request (``with_role_fields``) because the admin needs declared
fields to lay them out in fieldsets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordMixin
from django.core.exceptions import ValidationError

from hosts.choices import Role
from hosts.models import Team
from users import services
from users.models import Invite, User

GLOBAL_ROLE = "global_role"
_NO_ROLE = ("", "—")


def team_field(team_id: int) -> str:
    return f"team_{team_id}"


def role_field_names(scope: frozenset[int] | None, teams: Iterable[Team]) -> list[str]:
    return ([GLOBAL_ROLE] if scope is None else []) + [team_field(t.pk) for t in teams]


def with_role_fields(base: type[forms.BaseForm], scope: frozenset[int] | None, teams: list[Team]) -> type:
    """``base`` plus a role choice per team in ``teams`` (and a global one when ``scope`` is None)."""
    attrs: dict[str, Any] = {"role_scope": scope, "role_teams": teams}
    if scope is None:
        attrs[GLOBAL_ROLE] = forms.ChoiceField(
            label="Global role",
            choices=[("", "— none: roles on teams below —"), *Role.choices],
            required=False,
            help_text="A global role applies to every team; leave it empty to give roles per team.",
        )
    for team in teams:
        attrs[team_field(team.pk)] = forms.ChoiceField(
            label=team.name, choices=[_NO_ROLE, *Role.choices], required=False
        )
    return type(base)(base.__name__, (base,), attrs)


class RoleFieldsMixin:
    """Reads and fills the role fields added by ``with_role_fields``."""

    role_scope: frozenset[int] | None = None
    role_teams: list[Team] = []
    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]

    def set_role_initial(self, roles: services.RoleMap) -> None:
        if GLOBAL_ROLE in self.fields:
            self.fields[GLOBAL_ROLE].initial = roles.get(None, "")
        for team in self.role_teams:
            self.fields[team_field(team.pk)].initial = roles.get(team.pk, "")

    def selected_roles(self) -> services.RoleMap:
        """The roles chosen in the form's fields (the reader's scope only)."""
        roles: services.RoleMap = {}
        if self.cleaned_data.get(GLOBAL_ROLE):
            roles[None] = self.cleaned_data[GLOBAL_ROLE]
        for team in self.role_teams:
            value = self.cleaned_data.get(team_field(team.pk))
            if value:
                roles[team.pk] = value
        return roles

    @property
    def has_role_fields(self) -> bool:
        return GLOBAL_ROLE in self.fields or bool(self.role_teams)

    def role_error_field(self) -> str | None:
        return GLOBAL_ROLE if GLOBAL_ROLE in self.fields else None


def _messages(exc: ValidationError, field: str) -> list[str]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict.get(field, exc.messages)
    return exc.messages


class UserForm(RoleFieldsMixin, forms.ModelForm):
    """The user page: account fields (global admins) and roles (within the reader's scope)."""

    class Meta:
        model = User
        fields = ["username", "first_name", "last_name", "email"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "email" in self.fields:
            self.fields["email"].required = True
        self.set_role_initial(services.role_map(self.instance))

    def clean_username(self) -> str:
        try:
            return services.clean_username(self.cleaned_data.get("username", ""), exclude_id=self.instance.pk)
        except ValidationError as exc:
            raise ValidationError(_messages(exc, "username")) from exc

    def clean_email(self) -> str:
        try:
            return services.clean_email(self.cleaned_data.get("email", ""), exclude_id=self.instance.pk)
        except ValidationError as exc:
            raise ValidationError(_messages(exc, "email")) from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.has_role_fields:
            try:
                services.plan_roles(self.instance, self.selected_roles(), scope=self.role_scope)
            except ValidationError as exc:
                self.add_error(self.role_error_field(), exc.messages)
        return cleaned

    def validate_unique(self) -> None:
        """Username and email were checked ignoring case in ``clean_*``."""


class InviteForm(RoleFieldsMixin, forms.ModelForm):
    """A new invitation: the address, a suggested name and the roles the invitee will get."""

    class Meta:
        model = Invite
        fields = ["email", "name"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "email" in cleaned:
            try:
                cleaned["email"], _ = services.validate_invite(cleaned["email"], self.selected_roles())
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    self.add_error(field if field in self.fields else self.role_error_field(), errors)
        return cleaned


class AddToTeamForm(forms.Form):
    """Give an existing user a role on one of the reader's teams (found by exact name or email)."""

    user = forms.CharField(label="Username or email", max_length=254)
    team = forms.ModelChoiceField(queryset=Team.objects.none())
    role = forms.ChoiceField(choices=Role.choices, initial=Role.OBSERVER)

    def __init__(self, *args: Any, teams: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        self.found_user: Any = None

    def clean_user(self) -> Any:
        value = self.cleaned_data["user"].strip()
        model = get_user_model()
        matches = list(model.objects.filter(username__iexact=value)[:2]) or list(
            model.objects.filter(email__iexact=value)[:2]
        )
        if len(matches) != 1 or not matches[0].is_active:
            raise ValidationError("No active user has this username or email. Invite them instead.")
        if matches[0].is_superuser:
            raise ValidationError("Superusers are global admins already.")
        self.found_user = matches[0]
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.found_user is not None and cleaned.get("team"):
            try:
                services.plan_roles(
                    self.found_user, {cleaned["team"].pk: cleaned["role"]}, scope={cleaned["team"].pk}
                )
            except ValidationError as exc:
                self.add_error(None, exc.messages)
        return cleaned


class AcceptInviteForm(SetPasswordMixin, forms.Form):
    """The invitation page: the invitee picks a username, says their name and sets a password."""

    username = forms.CharField(
        max_length=150, help_text="150 characters or fewer: letters, digits and @ . + - _ only."
    )
    name = forms.CharField(label="Full name", max_length=300, required=False)
    password1, password2 = SetPasswordMixin.create_password_fields()

    def __init__(self, *args: Any, invite: Invite, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invite = invite

    def clean_username(self) -> str:
        try:
            return services.clean_username(self.cleaned_data["username"])
        except ValidationError as exc:
            raise ValidationError(_messages(exc, "username")) from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.validate_passwords()
        first, last = services.split_name(cleaned.get("name", ""))
        draft = get_user_model()(
            username=cleaned.get("username", ""), email=self.invite.email, first_name=first, last_name=last
        )
        self.validate_password_for_user(draft)
        return cleaned
