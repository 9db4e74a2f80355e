"""Query reports in the console: which hosts reported which query, and a query's report page.

Reports are written by agents (``queries.reports``), so the console only reads them. The report
page shows the same rows as ``GET /api/v1/queries/<id>/report/`` (``queries.reports.report_page``),
a page of rows at a time, with one column per osquery column. Who sees what follows the Fleet
roles that read host data: rows come only from hosts in the user's teams (all for global roles).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import F, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from fleet.numbers import parse_id
from hosts.permissions import HOST_READ_ROLES, has_any_role, scope_queryset, visible_team_ids
from queries.models import Query, QueryReport
from queries.reports import report_page

ROWS_PER_PAGE = 100


def report_url(query_id: int) -> str:
    """The console page of a query's report (for links from the query pages)."""
    return reverse("admin:queries_queryreport_query", args=[query_id])


def report_link(query: Query) -> str:
    """An HTML link to the query's report, for the query admin's list or page."""
    return format_html('<a href="{}">Report</a>', report_url(query.pk))


@admin.register(QueryReport)
class QueryReportAdmin(admin.ModelAdmin):
    list_display = ["query_link", "host_link", "kept_rows", "row_count", "clipped", "last_fetched"]
    list_display_links = None
    list_filter = [("query", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["query__name", "host__hostname"]
    search_help_text = "Query name or hostname (any part)."
    list_select_related = ["query", "host"]
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueryReport]:
        reports = super().get_queryset(request).defer("rows")
        return scope_queryset(reports, request.user, HOST_READ_ROLES, team_field="host__team_id")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) and has_any_role(request.user, HOST_READ_ROLES)

    def has_view_permission(self, request: HttpRequest, obj: QueryReport | None = None) -> bool:
        return super().has_view_permission(request, obj) and has_any_role(request.user, HOST_READ_ROLES)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents write reports

    def has_change_permission(self, request: HttpRequest, obj: QueryReport | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: QueryReport | None = None) -> bool:
        return False

    @admin.display(description="query", ordering="query__name")
    def query_link(self, report: QueryReport) -> str:
        return format_html('<a href="{}">{}</a>', report_url(report.query_id), report.query.name)

    @admin.display(description="host", ordering="host__hostname")
    def host_link(self, report: QueryReport) -> str:
        url = reverse("admin:hosts_host_change", args=[report.host_id])
        return format_html('<a href="{}">{}</a>', url, report.host.hostname or report.host_id)

    @admin.display(description="clipped", boolean=True)
    def clipped(self, report: QueryReport) -> bool:
        return report.row_count > report.kept_rows

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.query_report_view)
        return [path("query/<int:query_id>/", view, name="queries_queryreport_query"), *super().get_urls()]

    def query_report_view(self, request: HttpRequest, query_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise Http404("no such query")
        team_ids = visible_team_ids(request.user, HOST_READ_ROLES)
        queries = Query.objects.all()
        if team_ids is not None:
            queries = queries.filter(team_id__isnull=True) | queries.filter(team_id__in=team_ids)
        query = queries.filter(pk=query_id).first()
        if query is None:
            raise Http404("no such query")
        number = parse_id(request.GET.get("page")) or 1
        host_id = parse_id(request.GET.get("host_id"))  # the host page links to one host's rows
        page = report_page(query.pk, team_ids, (number - 1) * ROWS_PER_PAGE, ROWS_PER_PAGE, host_id=host_id)
        columns = list(dict.fromkeys(c for row in page.rows for c in row.columns))
        pages = max((page.count + ROWS_PER_PAGE - 1) // ROWS_PER_PAGE, 1)
        clipped_hosts = (
            QueryReport.objects.filter(query_id=query.pk, row_count__gt=F("kept_rows")).count()
            if page.clipped
            else 0
        )
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Report: {query.name}",
            "query": query,
            "query_change_url": _query_change_url(query),
            "page": page,
            "columns": columns,
            "table": [(row, [row.columns.get(c, "") for c in columns]) for row in page.rows],
            "number": number,
            "host_id": host_id,
            "pages": pages,
            "previous_page": number - 1 if number > 1 else None,
            "next_page": number + 1 if number < pages else None,
            "cap": settings.OSQUERY_LOGGING["QUERY_REPORT_CAP"],
            "clipped_hosts": clipped_hosts,
            "reports_disabled": settings.OSQUERY_LOGGING["QUERY_REPORTS_DISABLED"],
        }
        return TemplateResponse(request, "admin/queries/query_report.html", context)


def _query_change_url(query: Query) -> str | None:
    try:
        return reverse("admin:queries_query_change", args=[query.pk])
    except Exception:  # the query console may not be registered (NoReverseMatch)
        return None
