"""The console's user management (Fleet's Settings > Users): users, their roles, invitations.

Replaces Django's stock user and group pages, whose is_staff, groups and per-user permissions
mean nothing here (a Fleet role alone decides what someone may do: ``hosts.console_permissions``);
superusers stay a command-line matter (``createsuperuser``). Who sees what is decided in
``users.permissions`` (global admins: everyone; team admins: their teams' members and roles
only); every write goes through ``users.services``, which also enforces the rules that hold for
everyone (not yourself, not the last global admin).

- **Users**: list with a role summary, filters by role, team and active; the user page edits the
  account (global admins) and the roles (one global role, or one per team); *Reset password*,
  *Deactivate* and *Reactivate* buttons, and the same as list actions. No delete: deactivate.
- **Invitations**: an admin invites an email address with roles; the link is shown once on the
  page that follows (and emailed when ``EMAIL_HOST`` is set); pending ones are listed and can be
  revoked.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from knox.models import AuthToken

from hosts.choices import Role
from hosts.models import Team, UserRole
from users import services
from users.forms import AddToTeamForm, InviteForm, UserForm, role_field_names, with_role_fields
from users.links import MailResult, email_configured, invite_link, send_invite
from users.models import Invite, InviteRole, InviteStatus, User
from users.permissions import (
    is_global_admin,
    managed_team_ids,
    may_change_roles,
    may_edit_account,
    may_manage_invite,
    may_manage_users,
    scope_invites,
    scope_users,
)

# Django's own user and group pages edit what Fleet roles replace: they leave the console.
for _model in (get_user_model(), Group):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)

ACCOUNT_FIELDS = ["username", "first_name", "last_name", "email"]
STATUS_FIELDS = ["account_status", "last_login", "date_joined", "api_tokens"]
_INVITE_COLOURS = {
    InviteStatus.PENDING: "#0969da",
    InviteStatus.EXPIRED: "#6e7781",
    InviteStatus.ACCEPTED: "#1a7f37",
}


def _teams(request: HttpRequest) -> list[Team]:
    """The teams whose roles the reader manages, by name (read once per request)."""
    cached = getattr(request, "_users_managed_teams", None)
    if cached is None:
        scope = managed_team_ids(request.user)
        teams = Team.objects.order_by("name")
        cached = list(teams if scope is None else teams.filter(pk__in=scope))
        request._users_managed_teams = cached  # type: ignore[attr-defined]
    return cached


def _roles_help(request: HttpRequest) -> str:
    if managed_team_ids(request.user) is None:
        return "One global role (it covers every team), or one role per team. Empty means no role there."
    return "Roles on the teams you administer; the user's roles elsewhere are kept as they are."


class RoleListFilter(admin.SimpleListFilter):
    title = "role"
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Role.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in Role.values:
            return queryset
        rows = UserRole.objects.filter(role=self.value())
        scope = managed_team_ids(request.user)
        if scope is not None:
            rows = rows.filter(team_id__in=scope)
        return queryset.filter(pk__in=rows.values("user_id"))


class UserTeamListFilter(admin.SimpleListFilter):
    title = "team"
    parameter_name = "team"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        global_ = [("global", "Global role")] if managed_team_ids(request.user) is None else []
        return global_ + [(str(team.pk), team.name) for team in _teams(request)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "global":
            return queryset.filter(pk__in=UserRole.objects.filter(team__isnull=True).values("user_id"))
        if value and value.isdigit() and int(value) in {t.pk for t in _teams(request)}:
            return queryset.filter(pk__in=UserRole.objects.filter(team_id=int(value)).values("user_id"))
        return queryset


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    form = UserForm
    list_display = ["username", "full_name", "email", "roles", "is_active", "last_login"]
    list_filter = ["is_active", RoleListFilter, UserTeamListFilter]
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering = ["username"]
    actions = ["deactivate_selected", "reactivate_selected"]
    readonly_fields = ["roles", *STATUS_FIELDS]

    # --- who may do what (users.permissions) ---
    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_manage_users(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_manage_users(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_manage_users(request.user)  # "add" is an invitation

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not may_manage_users(request.user):
            return False
        return obj is None or may_edit_account(request.user, obj) or may_change_roles(request.user, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead: what a user authored keeps its author

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        scope = managed_team_ids(request.user)
        visible = UserRole.objects.select_related("team").order_by("team__name")
        if scope is not None:
            visible = visible.filter(team_id__in=scope)
        users = super().get_queryset(request).annotate(role_count=Count("fleet_roles"))
        users = users.prefetch_related(Prefetch("fleet_roles", queryset=visible, to_attr="visible_roles"))
        return scope_users(users, request.user)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if not is_global_admin(request.user):
            actions.pop("deactivate_selected", None)
            actions.pop("reactivate_selected", None)
        return actions

    # --- columns and read-only fields ---
    @admin.display(description="name", ordering="first_name")
    def full_name(self, user: Any) -> str:
        return user.get_full_name()

    @admin.display(description="roles")
    def roles(self, user: Any) -> str:
        visible = getattr(user, "visible_roles", None)
        if visible is None:
            return services.describe_user_roles(user)
        hidden = getattr(user, "role_count", len(visible)) - len(visible)
        return services.describe_rows(visible, superuser=user.is_superuser, hidden=hidden)

    @admin.display(description="status")
    def account_status(self, user: Any) -> str:
        if not user.is_active:
            return "Deactivated: cannot log in or use the API."
        if not user.has_usable_password():
            return "Active, no password yet (waiting for the set-password link)."
        return "Active"

    @admin.display(description="API tokens")
    def api_tokens(self, user: Any) -> int:
        return AuthToken.objects.filter(user=user).count()

    # --- the user page ---
    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        fieldsets: list = [(None, {"fields": ACCOUNT_FIELDS})]
        if obj is not None and may_change_roles(request.user, obj):
            names = role_field_names(managed_team_ids(request.user), _teams(request))
            if managed_team_ids(request.user) is not None:
                names = ["roles", *names]
            fieldsets.append(("Roles", {"fields": names, "description": _roles_help(request)}))
        else:
            description = (
                "Superusers are global admins; manage them with manage.py."
                if obj and obj.is_superuser
                else ""
            )
            fieldsets.append(("Roles", {"fields": ["roles"], "description": description}))
        fieldsets.append(("Status", {"fields": STATUS_FIELDS}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(self.readonly_fields)
        if obj is not None and not may_edit_account(request.user, obj):
            fields += ACCOUNT_FIELDS
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = UserForm
        if obj is not None and may_change_roles(request.user, obj):
            form = with_role_fields(UserForm, managed_team_ids(request.user), _teams(request))
        return super().get_form(request, obj, change=change, form=form, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        account = [name for name in ACCOUNT_FIELDS if name in form.fields]
        if account:
            obj.save(update_fields=account)
        if form.has_role_fields:
            try:
                services.set_roles(obj, form.selected_roles(), scope=form.role_scope, actor=request.user)
            except ValidationError as exc:  # a concurrent change since the form was checked
                messages.error(request, " ".join(exc.messages))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict,
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(
                may_edit_account=may_edit_account(request.user, obj),
                is_self=obj.pk == request.user.pk,
            )
        context.update(show_save_and_add_another=False)  # "add" is an invitation
        return super().render_change_form(request, context, add, change, form_url, obj)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        """New users come in by invitation (or ``manage.py user add``)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:users_invite_add"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        pending = 0
        if may_manage_users(request.user):
            pending = scope_invites(Invite.objects.pending(), request.user).count()
        context = {"title": "Users", "pending_invites": pending, **(extra_context or {})}
        return super().changelist_view(request, context)

    # --- extra pages: reset password, (de)activate, add to a team ---
    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("add-to-team/", wrap(self.add_to_team_view), name="users_user_add_to_team"),
            path("<path:object_id>/password/", wrap(self.password_view), name="users_user_password"),
            path("<path:object_id>/deactivate/", wrap(self.deactivate_view), name="users_user_deactivate"),
            path("<path:object_id>/activate/", wrap(self.activate_view), name="users_user_activate"),
            *super().get_urls(),
        ]

    def _account(self, request: HttpRequest, object_id: str) -> Any:
        """The user behind an account page, if the reader may edit the account (else 404/403)."""
        if not may_manage_users(request.user):
            raise PermissionDenied
        user = self.get_object(request, unquote(object_id))
        if user is None:
            raise Http404("No such user.")
        if not may_edit_account(request.user, user):
            raise PermissionDenied
        return user

    def _page(
        self, request: HttpRequest, template: str, user: Any | None, **context: Any
    ) -> TemplateResponse:
        response = TemplateResponse(
            request,
            template,
            {**self.admin_site.each_context(request), "opts": self.opts, "original": user, **context},
        )
        add_never_cache_headers(response)
        return response

    def _back(self, user: Any) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:users_user_change", args=[user.pk]))

    @method_decorator(sensitive_post_parameters("new_password1", "new_password2"))
    def password_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        user = self._account(request, object_id)
        form = SetPasswordForm(user, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                revoked = services.set_password(user, form.cleaned_data["new_password1"], actor=request.user)
            except ValidationError as exc:
                form.add_error("new_password2", exc.messages)
            else:
                if user.pk == request.user.pk:
                    update_session_auth_hash(request, user)
                self.log_change(request, user, "Reset the password.")
                messages.success(
                    request,
                    f'The password of "{user}" was changed; their other sessions ended and '
                    f"{revoked} API token(s) were revoked.",
                )
                return self._back(user)
        return self._page(
            request, "admin/users/user/password.html", user, title=f"Reset the password of {user}", form=form
        )

    def deactivate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._status_view(request, object_id, active=False)

    def activate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._status_view(request, object_id, active=True)

    def _status_view(self, request: HttpRequest, object_id: str, *, active: bool) -> HttpResponse:
        user = self._account(request, object_id)
        problem = ""
        if not active:
            try:
                services.check_can_deactivate(user, actor=request.user)
            except ValidationError as exc:
                problem = " ".join(exc.messages)
        if request.method == "POST" and not problem:
            try:
                if active:
                    services.activate(user, actor=request.user)
                    note = "It can log in again (with new API tokens: the old ones were revoked)."
                else:
                    revoked = services.deactivate(user, actor=request.user)
                    note = f"{revoked.tokens} API token(s) and {revoked.sessions} session(s) revoked."
            except ValidationError as exc:
                problem = " ".join(exc.messages)
            else:
                verb = "Reactivated" if active else "Deactivated"
                self.log_change(request, user, f"{verb}.")
                messages.success(request, f'{verb} "{user}". {note}')
                return self._back(user)
        verb = "Reactivate" if active else "Deactivate"
        return self._page(
            request,
            "admin/users/user/status.html",
            user,
            title=f"{verb} {user}?",
            active=active,
            verb=verb,
            problem=problem,
            tokens=AuthToken.objects.filter(user=user).count(),
        )

    def add_to_team_view(self, request: HttpRequest) -> HttpResponse:
        if not may_manage_users(request.user):
            raise PermissionDenied
        teams = Team.objects.filter(pk__in=[t.pk for t in _teams(request)]).order_by("name")
        form = AddToTeamForm(request.POST if request.method == "POST" else None, teams=teams)
        if request.method == "POST" and form.is_valid():
            user, team, role = form.found_user, form.cleaned_data["team"], form.cleaned_data["role"]
            try:
                services.set_roles(user, {team.pk: role}, scope={team.pk}, actor=request.user)
            except ValidationError as exc:
                form.add_error(None, exc.messages)
            else:
                self.log_change(request, user, f"Gave the role {services.role_label(role)} on {team.name}.")
                messages.success(request, f'"{user}" is now {services.role_label(role)} on {team.name}.')
                return self._back(user)
        return self._page(
            request, "admin/users/user/add_to_team.html", None, title="Add a user to a team", form=form
        )

    # --- list actions ---
    @admin.action(description="Deactivate the selected users (revokes their API tokens and sessions)")
    def deactivate_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Reactivate the selected users")
    def reactivate_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request: HttpRequest, queryset: QuerySet, *, active: bool) -> None:
        done, refused = [], []
        for user in queryset.order_by("username"):
            if user.is_active == active:
                continue
            if not may_edit_account(request.user, user):
                refused.append(f'"{user}": only a superuser can change a superuser.')
                continue
            try:
                if active:
                    services.activate(user, actor=request.user)
                else:
                    services.deactivate(user, actor=request.user)
            except ValidationError as exc:
                refused.append(" ".join(exc.messages))
            else:
                self.log_change(request, user, "Reactivated." if active else "Deactivated.")
                done.append(str(user))
        if done:
            verb = "Reactivated" if active else "Deactivated"
            messages.success(request, f"{verb}: {', '.join(done)}.")
        for reason in refused:
            messages.error(request, reason)
        if not done and not refused:
            messages.info(request, "Nothing to change.")


class InviteStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(InviteStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in InviteStatus.values:
            return queryset.with_status(self.value())
        return queryset


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    form = InviteForm
    list_display = ["email", "name", "roles", "invited_by", "created_at", "expires_at", "status_badge"]
    list_filter = [InviteStatusFilter]
    search_fields = ["email", "name"]
    list_select_related = ["invited_by"]
    actions = ["revoke_selected"]
    readonly_fields = [
        "roles",
        "status_badge",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "user",
    ]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_manage_users(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_manage_users(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may_manage_users(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an invitation is revoked and sent again, not edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not may_manage_users(request.user):
            return False
        return obj is None or may_manage_invite(request.user, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        roles = InviteRole.objects.select_related("team").order_by("team__name")
        invites = super().get_queryset(request).prefetch_related(Prefetch("roles", queryset=roles))
        return scope_invites(invites, request.user)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "Revoke" says what it does
        return actions

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Invitations", **(extra_context or {})})

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict,
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if add:
            context.update(title="Invite a user", show_save_and_add_another=False)
            context.update(show_save_and_continue=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="roles")
    def roles(self, invite: Invite) -> str:
        return services.describe_rows(invite.roles.all())

    @admin.display(description="status")
    def status_badge(self, invite: Invite) -> str:
        status = InviteStatus(invite.status)
        return format_html(
            '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px">'
            "{}</span>",
            _INVITE_COLOURS[status],
            status.label,
        )

    def get_fieldsets(self, request: HttpRequest, obj: Invite | None = None) -> list:
        if obj is not None:
            return [(None, {"fields": ["email", "name", *self.readonly_fields]})]
        names = role_field_names(managed_team_ids(request.user), _teams(request))
        if not email_configured():
            mail = "No mail server is configured (EMAIL_HOST): you will copy the link to the invitee."
        else:
            mail = "The link is emailed to this address and shown to you once."
        return [
            (None, {"fields": ["email", "name"], "description": mail}),
            ("Roles", {"fields": names, "description": _roles_help(request)}),
        ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = InviteForm
        if obj is None:
            form = with_role_fields(InviteForm, managed_team_ids(request.user), _teams(request))
        return super().get_form(request, obj, change=change, form=form, **kwargs)

    def save_model(self, request: HttpRequest, obj: Invite, form: Any, change: bool) -> None:
        invite, token = services.create_invite(
            form.cleaned_data["email"],
            form.selected_roles(),
            name=form.cleaned_data.get("name", ""),
            invited_by=request.user,
        )
        obj.pk, obj.email, obj.created_at, obj.expires_at = (
            invite.pk,
            invite.email,
            invite.created_at,
            invite.expires_at,
        )
        obj.token_digest, obj.invited_by = invite.token_digest, invite.invited_by
        obj._token = token  # type: ignore[attr-defined]  # shown once by response_add, never stored

    def response_add(
        self, request: HttpRequest, obj: Invite, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The one page that shows the link: the database keeps only its digest."""
        invite = Invite.objects.select_related("invited_by").get(pk=obj.pk)
        link = invite_link(obj._token, request)  # type: ignore[attr-defined]
        mail = send_invite(invite, link)
        response = TemplateResponse(
            request,
            "admin/users/invite/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Invitation created",
                "invite": invite,
                "roles": self.roles(invite),
                "link": link,
                "mail_sent": mail is MailResult.SENT,
                "mail_failed": mail is MailResult.FAILED,
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke the selected invitations")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.revoke_invites(queryset, actor=request.user)
        messages.success(request, f"Revoked {count} invitation(s); their links no longer work.")
