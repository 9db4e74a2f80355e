"""Configuration profiles in the console: the list with each profile's status across hosts, the
upload form, a read-only page per profile (with Download and Delete), and the host page's Resend.

Team-scoped like scripts: every console role reads the no-team profiles and their teams';
admins and maintainers upload and delete them (no-team ones need a global role). A profile is
never edited in place: upload a new one, or replace a team's set through the REST batch. The
form checks through :func:`mdm.profiles.services.check_new_profile`, so a refused profile gets the
same message as in REST, on the field it concerns. Writes go through the services, which record
``created_macos_profile`` / ``deleted_macos_profile``; the console's generic records are left out
so each change is in the trail once.
"""

from __future__ import annotations

import plistlib
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from activities.admin_hooks import AuditedModelAdmin
from hosts.models import Host, Label, Team
from hosts.permissions import HOST_READ_ROLES, scope_queryset, visible_team_ids
from mdm import access
from mdm.models import HostProfile, Profile
from mdm.profiles import reads, services
from mdm.profiles.scope import label_mode
from mdm.profiles.validation import MAX_PROFILE_BYTES, ProfileError
from mdm.profiles_api import mobileconfig_response, with_labels

_MODE_LABELS = {
    "": "All hosts of the team",
    "include_all": "Hosts in all of these labels",
    "include_any": "Hosts in any of these labels",
    "exclude_any": "Hosts in none of these labels",
}
# ProfileError.field -> the form field it concerns.
_FIELDS = {"profile": "upload", "labels": "labels", "team_id": "team"}


class ProfileAddForm(forms.ModelForm):
    """Upload a profile for a team, optionally scoped by labels."""

    upload = forms.FileField(
        label="Profile", help_text="A .mobileconfig file (signed or not), at most 1 MiB."
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False, empty_label="No team")
    label_mode = forms.ChoiceField(
        label="Hosts", choices=list(_MODE_LABELS.items()), required=False, initial=""
    )
    labels = forms.ModelMultipleChoiceField(
        queryset=Label.objects.order_by("name"),
        required=False,
        help_text="Used unless the profile goes to all hosts.",
    )
    user: Any = None  # set by ProfileAdmin.get_form

    class Meta:
        model = Profile
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checked: dict[str, Any] | None = None
        team_ids = visible_team_ids(self.user, access.WRITE_ROLES) if self.user else frozenset()
        team_field = self.fields["team"]
        team_field.queryset = Team.objects.all() if team_ids is None else Team.objects.filter(pk__in=team_ids)
        if team_ids is not None:
            team_field.required = True  # only global roles upload no-team profiles
            team_field.empty_label = None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("upload")
        if upload is None or self.errors:
            return data
        if upload.size is not None and upload.size > MAX_PROFILE_BYTES:
            self.add_error("upload", f"The profile is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB.")
            return data
        mode, labels = data.get("label_mode") or "", list(data.get("labels") or [])
        if mode and not labels:
            self.add_error("labels", "Choose the labels, or send the profile to all hosts of the team.")
            return data
        if labels and not mode:
            self.add_error("label_mode", "Say how the labels apply, or clear them.")
            return data
        contents = upload.read(MAX_PROFILE_BYTES + 1)
        scope = {f"labels_{mode}": labels} if mode else {}
        try:
            services.check_new_profile(team=data.get("team"), data=contents, **scope)
        except ProfileError as exc:
            self.add_error(_FIELDS.get(exc.field, "upload"), exc.message)
            return data
        self.checked = {"team": data.get("team"), "data": contents, **scope}
        return data


class TeamFilter(admin.SimpleListFilter):
    """No team, or one of the teams the user may see."""

    title = "team"
    parameter_name = "team_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        team_ids = visible_team_ids(request.user, HOST_READ_ROLES)
        teams = Team.objects.all() if team_ids is None else Team.objects.filter(pk__in=team_ids)
        return [("0", "No team"), *((str(t.pk), t.name) for t in teams.only("id", "name"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        if value == "0":
            return queryset.filter(team__isnull=True)
        return (
            queryset.filter(team_id=int(value))
            if value.isascii() and value.isdigit() and len(value) < 19
            else queryset
        )


def status_badge(status: str, label: str) -> str:
    return format_html('<span class="profile-status profile-status-{}">{}</span>', status, label)


@admin.register(Profile)
class ProfileAdmin(AuditedModelAdmin, admin.ModelAdmin):
    form = ProfileAddForm
    list_display = [
        "name",
        "identifier",
        "team_display",
        "scope_display",
        "verified",
        "verifying",
        "pending",
        "failed",
        "download_link",
    ]
    list_filter = [TeamFilter]
    search_fields = ["name", "identifier"]
    list_select_related = ["team"]
    add_fieldsets = [(None, {"fields": ["upload", "team", "label_mode", "labels"]})]
    view_fields = [
        "name",
        "identifier",
        "team_display",
        "scope_display",
        "checksum",
        "status_display",
        "created_at",
        "updated_at",
        "download_link",
        "contents_display",
    ]

    change_form_template = "admin/mdm/profiles/change_form.html"

    # --- who may do what ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Profile]:
        profiles = with_labels(super().get_queryset(request).defer("mobileconfig"))
        return access.readable_profiles(reads.annotate_counts(profiles), request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and access.may_manage_any(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Profile | None = None) -> bool:
        return False  # profiles are replaced by uploading, never edited here

    def has_delete_permission(self, request: HttpRequest, obj: Profile | None = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        return (
            access.may_manage_any(request.user)
            if obj is None
            else access.may_manage_team(request.user, obj.team_id)
        )

    def get_form(self, request: HttpRequest, obj: Profile | None = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def get_fieldsets(self, request: HttpRequest, obj: Profile | None = None) -> list:
        if obj is None:
            return self.add_fieldsets
        return [(None, {"fields": self.view_fields})]

    def get_readonly_fields(self, request: HttpRequest, obj: Profile | None = None) -> list[str]:
        return self.view_fields if obj is not None else []

    # --- columns and fields -----------------------------------------------------------------------
    @admin.display(description="team", ordering="team__name")
    def team_display(self, profile: Profile) -> str:
        return profile.team.name if profile.team_id else "No team"

    @admin.display(description="hosts")
    def scope_display(self, profile: Profile) -> str:
        mode, labels = label_mode(profile)
        if not mode:
            return _MODE_LABELS[""]
        names = format_html_join(", ", "{}", ((label.name,) for label in labels))
        return format_html("{}: {}", _MODE_LABELS[mode], names)

    def _count(self, profile: Profile, status: str) -> int:
        value = getattr(profile, f"{status}_count", None)
        return value if value is not None else reads.status_counts([profile.pk])[profile.pk][status]

    @admin.display(description="verified", ordering="verified_count")
    def verified(self, profile: Profile) -> int:
        return self._count(profile, "verified")

    @admin.display(description="verifying", ordering="verifying_count")
    def verifying(self, profile: Profile) -> int:
        return self._count(profile, "verifying")

    @admin.display(description="pending", ordering="pending_count")
    def pending(self, profile: Profile) -> int:
        return self._count(profile, "pending")

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, profile: Profile) -> int:
        return self._count(profile, "failed")

    @admin.display(description="status on hosts")
    def status_display(self, profile: Profile) -> str:
        return format_html_join(
            " ",
            '<span class="profile-status profile-status-{}">{} {}</span>',
            ((s.value, self._count(profile, s.value), s.label.lower()) for s in reads.STATUSES),
        )

    @admin.display(description="download")
    def download_link(self, profile: Profile) -> str:
        url = reverse("admin:mdm_profile_download", args=[profile.pk])
        return format_html('<a href="{}" download>.mobileconfig</a>', url)

    @admin.display(description="contents")
    def contents_display(self, profile: Profile) -> str:
        data = Profile.objects.filter(pk=profile.pk).values_list("mobileconfig", flat=True).first()
        return format_html('<pre class="mdm-plist">{}</pre>', _readable(bytes(data or b"")))

    # --- writes: through the services, which record the activity ---------------------------------
    def save_model(self, request: HttpRequest, obj: Profile, form: ProfileAddForm, change: bool) -> None:
        try:
            saved = services.create_profile(**form.checked, user=request.user)
        except ProfileError as exc:  # lost a race with another upload since the form checked
            self.message_user(request, exc.message, messages.ERROR)
            return
        obj.pk, obj.uuid, obj.name, obj.identifier = saved.pk, saved.uuid, saved.name, saved.identifier

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Labels are set by the service."""

    def response_add(
        self, request: HttpRequest, obj: Profile, post_url_continue: str | None = None
    ) -> HttpResponse:
        if obj.pk is None:
            return HttpResponseRedirect(reverse("admin:mdm_profile_add"))
        return super().response_add(request, obj, post_url_continue)

    def delete_model(self, request: HttpRequest, obj: Profile) -> None:
        services.delete_profile(obj, user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Profile]) -> None:
        for profile in queryset.select_related("team"):
            if access.may_manage_team(request.user, profile.team_id):
                services.delete_profile(profile, user=request.user)

    # The services record created/deleted_macos_profile themselves, so the generic console hooks
    # (activities.admin_hooks) neither announce nor record here.
    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        return admin.ModelAdmin.save_form(self, request, form, change)

    def log_addition(self, request: HttpRequest, obj: Profile, message: Any) -> Any:
        return admin.ModelAdmin.log_addition(self, request, obj, message) if obj.pk else None

    def log_change(self, request: HttpRequest, obj: Profile, message: Any) -> Any:
        return admin.ModelAdmin.log_change(self, request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        return admin.ModelAdmin.log_deletions(self, request, queryset)

    # --- extra pages ------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/download/", view(self.download_view), name="mdm_profile_download"),
            path(
                "host/<int:host_id>/resend/<int:row_id>/",
                view(self.resend_view),
                name="mdm_profile_resend",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        profile = access.readable_profiles(Profile.objects.all(), request.user).filter(pk=pk).first()
        if profile is None:
            raise Http404("No such profile.")
        return mobileconfig_response(profile, bytes(profile.mobileconfig))

    def resend_view(self, request: HttpRequest, host_id: int, row_id: int) -> HttpResponse:
        """The host page's Resend (POST; admins and maintainers of the host's team)."""
        if request.method != "POST":
            raise PermissionDenied
        host = get_object_or_404(
            scope_queryset(Host.objects.all(), request.user, HOST_READ_ROLES), pk=host_id
        )
        if not access.may_manage_team(request.user, host.team_id):
            raise PermissionDenied
        row = get_object_or_404(HostProfile, pk=row_id, host=host)
        try:
            services.resend(host, row.identifier, user=request.user)
        except ProfileError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Sent {row.name or row.identifier} to {host.display_name} again.")
        return HttpResponseRedirect(reverse("admin:hosts_host_change", args=[host.pk]) + "#host-mdm-profiles")


def _readable(data: bytes) -> str:
    """The profile's plist as text for the page (the content of a signed one), bounded."""
    text = data
    try:
        if not data.lstrip().startswith((b"<", b"bplist")):
            from mdm.pki import cms

            text = cms.content_of_signed(data)
        body = plistlib.loads(text)
        return plistlib.dumps(body, fmt=plistlib.FMT_XML, sort_keys=False).decode()[:200_000]
    except Exception:  # shown for information only; the download has the exact bytes
        return "(This profile cannot be shown; download it instead.)"
