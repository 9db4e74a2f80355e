"""The console's Software pages: titles and versions with host counts, read-only.

Agents report software, so nothing here is editable. Counts are the kept ones
(``software.counts``) for the hosts the user may see: fleet-wide for global roles, their teams'
hosts for team users (who see only titles present there). Each count links to the host list
filtered by that software (``software.filters.SoftwareHostListFilter`` on ``HostAdmin``).
Lists never count the whole table (``CappedCountPaginator``), and order by the kept counts.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from hosts.paginators import CappedPaginationAdminMixin
from hosts.permissions import HOST_READ_ROLES, has_any_role
from software import inventory, tasks
from software.filters import TITLE_PARAMETER, VERSION_PARAMETER
from software.models import SoftwareTitle, SoftwareVersion

VERSIONS_SHOWN = 5  # in the list; a title's page shows them all


def _hosts_link(parameter: str, object_id: int, count: int) -> str:
    url = reverse("admin:hosts_host_changelist") + f"?{parameter}={object_id}"
    return format_html('<a href="{}">{}</a>', url, f"{count:,}")


class ReadOnlyInventoryAdmin(CappedPaginationAdminMixin, admin.ModelAdmin):
    """Shared rules: any host reader may look, nobody writes; big-table list settings."""

    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = None

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_any_role(request.user, HOST_READ_ROLES)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_any_role(request.user, HOST_READ_ROLES)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        tasks.refresh_counts_if_due()  # the embedded default has no beat; production: a no-op
        return super().changelist_view(request, extra_context)


@admin.register(SoftwareTitle)
class SoftwareTitleAdmin(ReadOnlyInventoryAdmin):
    list_display = ["name", "source_name", "identifier", "versions_display", "hosts"]
    list_filter = ["source"]
    search_fields = ["name", "bundle_identifier"]
    search_help_text = "Name or bundle / extension id (any part)."
    fields = [
        "name",
        "source_name",
        "bundle_identifier",
        "extension_for",
        "hosts",
        "all_versions",
        "created_at",
    ]
    readonly_fields = fields

    def get_ordering(self, request: HttpRequest) -> list[str]:
        return ["-hosts_count", "name", "id"]  # an annotation: not allowed in ``ordering`` itself

    def get_queryset(self, request: HttpRequest) -> QuerySet[SoftwareTitle]:
        scope = inventory.scope_for(request.user)
        return inventory.with_versions(inventory.titles(scope), scope)

    @admin.display(description="source", ordering="source")
    def source_name(self, title: SoftwareTitle) -> str:
        return title.get_source_display()

    @admin.display(description="bundle / extension id", ordering="bundle_identifier")
    def identifier(self, title: SoftwareTitle) -> str:
        if title.extension_for:
            return f"{title.bundle_identifier} ({title.extension_for})"
        return title.bundle_identifier

    @admin.display(description="versions (hosts)")
    def versions_display(self, title: SoftwareTitle) -> str:
        shown = title.scoped_versions[:VERSIONS_SHOWN]
        text = format_html_join(
            ", ",
            '<a href="{}">{}</a> ({})',
            (
                (
                    reverse("admin:hosts_host_changelist") + f"?{VERSION_PARAMETER}={v.pk}",
                    v.version or "unknown",
                    f"{v.hosts_count:,}",
                )
                for v in shown
            ),
        )
        more = len(title.scoped_versions) - len(shown)
        return format_html("{} and {} more", text, more) if more > 0 else text

    @admin.display(description="hosts", ordering="hosts_count")
    def hosts(self, title: SoftwareTitle) -> str:
        return _hosts_link(TITLE_PARAMETER, title.pk, title.hosts_count)

    @admin.display(description="versions (hosts)")
    def all_versions(self, title: SoftwareTitle) -> str:
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td><a href="{}">{}</a></td></tr>',
            (
                (
                    v.version or "unknown",
                    reverse("admin:hosts_host_changelist") + f"?{VERSION_PARAMETER}={v.pk}",
                    f"{v.hosts_count:,}",
                )
                for v in title.scoped_versions
            ),
        )
        return format_html("<table><tr><th>version</th><th>hosts</th></tr>{}</table>", rows)


@admin.register(SoftwareVersion)
class SoftwareVersionAdmin(ReadOnlyInventoryAdmin):
    list_display = ["title_name", "version", "source_name", "hosts"]
    list_filter = ["title__source"]
    list_select_related = ["title"]
    search_fields = ["title__name", "version"]
    search_help_text = "Name or version (any part)."
    fields = ["title_name", "version", "source_name", "hosts", "created_at"]
    readonly_fields = fields

    def get_ordering(self, request: HttpRequest) -> list[str]:
        return ["-hosts_count", "title__name", "version", "id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SoftwareVersion]:
        return inventory.versions(inventory.scope_for(request.user)).select_related("title")

    @admin.display(description="name", ordering="title__name")
    def title_name(self, version: SoftwareVersion) -> str:
        url = reverse("admin:software_softwaretitle_change", args=[version.title_id])
        return format_html('<a href="{}">{}</a>', url, version.title.name)

    @admin.display(description="source", ordering="title__source")
    def source_name(self, version: SoftwareVersion) -> str:
        return version.title.get_source_display()

    @admin.display(description="hosts", ordering="hosts_count")
    def hosts(self, version: SoftwareVersion) -> str:
        return _hosts_link(VERSION_PARAMETER, version.pk, version.hosts_count)
