"""The console's "Agent updates" page: the repository's targets and the hosts behind their channel.

Every console role may look (host counts narrowed to the teams the user may see, as everywhere);
only global admins may act on the repository, because it is fleet-wide. The one action here is
re-signing the timestamp now, with the server's ``FLEET_TIMESTAMP_PASSPHRASE``; publishing
files needs the targets and snapshot keys, which stay with the operator (``manage.py updates``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from activities import recording
from hosts.permissions import ADMIN_ROLES, visible_team_ids
from updates import host_versions, keys, tasks
from updates import tuf_metadata as tm
from updates.models import AgentUpdates
from updates.passphrases import variable_for
from updates.repository import RepositoryError, UpdateRepository


def may_manage_updates(user: Any) -> bool:
    """Global admins only: the repository serves every team."""
    return bool(user.is_active) and visible_team_ids(user, ADMIN_ROLES) is None


def _tuf_url(request: HttpRequest) -> str:
    base_url = settings.AGENT_UPDATES.get("BASE_URL") or ""
    return base_url.rstrip("/") if base_url else request.build_absolute_uri("/tuf").rstrip("/")


@admin.register(AgentUpdates)
class AgentUpdatesAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and may_manage_updates(request.user)

    def get_urls(self) -> list[URLPattern]:
        """Only the page and its one action: there are no rows to add, change or delete."""
        view = self.admin_site.admin_view
        return [
            path("", view(self.changelist_view), name="updates_agentupdates_changelist"),
            path("timestamp/", view(self.timestamp_view), name="updates_agentupdates_timestamp"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        tasks.refresh_timestamp_if_due()  # the embedded default has no beat; production: a no-op
        repository = UpdateRepository.from_settings()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Agent updates",
            "opts": self.model._meta,
            "may_manage": self.has_change_permission(request),
            "repository_dir": repository.repository_dir,
            "tuf_url": _tuf_url(request),
            "initialised": False,
            **(extra_context or {}),
        }
        try:
            if repository.is_initialised():
                entries = repository.targets()
                roles = repository.roles()
                context.update(
                    initialised=True,
                    targets=entries,
                    roles=roles,
                    timestamp_warning=_timestamp_warning(roles),
                    components=host_versions.versions_for(request.user, entries),
                    root_json=json.dumps(json.loads(repository.root_bytes()), separators=(",", ":")),
                )
        except (OSError, ValueError, RepositoryError) as exc:
            context["problem"] = f"The repository in {repository.repository_dir} cannot be read: {exc}"
        return TemplateResponse(request, "admin/updates/agentupdates/page.html", context)

    def timestamp_view(self, request: HttpRequest) -> HttpResponse:
        """Re-sign timestamp.json now (global admins; POST)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        repository = UpdateRepository.from_settings()
        passphrase = tasks.timestamp_passphrase(repository)
        if passphrase is None:
            messages.error(
                request,
                f"{variable_for('timestamp')} is not set on the server: "
                "re-sign with `manage.py updates timestamp` where the key is.",
            )
        else:
            try:
                status = repository.refresh_timestamp(passphrase)
            except (RepositoryError, keys.KeyFileError, OSError) as exc:
                messages.error(request, f"The timestamp could not be re-signed: {exc}")
            else:
                until = f"{status.expires:%Y-%m-%d %H:%M} UTC"
                recording.record("resigned_update_timestamp", details={"version": status.version})
                messages.success(request, f"Signed timestamp version {status.version}, valid until {until}.")
        return HttpResponseRedirect(reverse("admin:updates_agentupdates_changelist"))


def _timestamp_warning(roles: list[Any]) -> str:
    """Said when the timestamp is older than the beat task lets it get (so the task is failing)."""
    timestamp = next((r for r in roles if r.role == "timestamp"), None)
    if timestamp is None:
        return ""
    left = timestamp.expires - tm.utcnow()
    if left.total_seconds() <= 0:
        return "timestamp.json has expired: agents refuse every update until it is re-signed."
    if left < tasks.refresh_before() - timedelta(days=1):
        return (
            f"timestamp.json expires in {left.days} day(s) and has not been re-signed: "
            f"check the beat task and {variable_for('timestamp')}."
        )
    return ""
