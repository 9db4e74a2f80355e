"""Past and running live queries in the console: who asked what of which hosts, when, and how it went.

Campaigns are an audit trail (Fleet's users asked for one: who queried which targets), so the
admin never adds or edits them through model forms: "Add" opens the live-query page, and a
campaign's page is the live campaign page (``campaigns.admin_views``). Who sees what follows the
Fleet roles in ``campaigns.services``, not Django model permissions: those who may run live
queries see the list; admins see every campaign, everyone else their own.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from campaigns import admin_views, services
from campaigns.models import Campaign, CampaignResult, CampaignStatus, ResultState

STATUS_COLOURS = {
    CampaignStatus.WAITING: "#9a6700",
    CampaignStatus.RUNNING: "#0969da",
    CampaignStatus.FINISHED: "#1a7f37",
    CampaignStatus.STOPPED: "#6e7781",
    CampaignStatus.EXPIRED: "#6e7781",
}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["sql_preview", "created_by", "created_at", "status_badge", "targets", "hosts", "answers"]
    list_display_links = ["sql_preview"]
    list_filter = ["status", ("created_by", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["sql", "query_name", "created_by__username"]
    search_help_text = "SQL, saved query name or user name (any part)."
    list_select_related = ["created_by"]
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    change_list_template = "admin/campaigns/campaign/change_list.html"

    # --- who may do what ------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return services.watchable(super().get_queryset(request), request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return admin_views.may_run_live_queries(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        if obj is not None:
            return services.may_watch(request.user, obj)
        return admin_views.may_run_live_queries(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return admin_views.may_run_live_queries(request.user)  # "Add" opens the live-query page

    def has_change_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        return False  # results go when the retention period ends (campaigns.services)

    # --- the list ---------------------------------------------------------------------------------
    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """Answer counts for the shown page only, in one grouped query (results can be millions)."""
        changelist = super().get_changelist_instance(request)
        page = list(changelist.result_list)  # evaluates (and caches) the page the template shows
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        grouped = (
            CampaignResult.objects.filter(campaign_id__in=[c.pk for c in page])
            .order_by()
            .values("campaign_id", "state")
            .annotate(n=Count("id"))
            .values_list("campaign_id", "state", "n")
        )
        for campaign_id, state, n in grouped:
            counts[campaign_id][state] = n
        for campaign in page:
            campaign.answer_counts = counts.get(campaign.pk, {})
        return changelist

    @admin.display(description="SQL", ordering="sql")
    def sql_preview(self, campaign: Campaign) -> str:
        text = Truncator(" ".join(campaign.sql.split())).chars(80)
        if campaign.query_name:
            return format_html("{} <code>{}</code>", campaign.query_name, text)
        return format_html("<code>{}</code>", text)

    @admin.display(description="status", ordering="status")
    def status_badge(self, campaign: Campaign) -> str:
        return format_html(
            '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px;'
            'white-space:nowrap">{}</span>',
            STATUS_COLOURS.get(campaign.status, "#6e7781"),
            campaign.get_status_display(),
        )

    @admin.display(description="targets")
    def targets(self, campaign: Campaign) -> str:
        parts = []
        if campaign.target_all:
            parts.append("all hosts")
        teams = len(campaign.target_teams)
        for count, noun in (
            (teams, "team"),
            (len(campaign.target_labels), "label"),
            (len(campaign.target_hosts), "host"),
        ):
            if count:
                parts.append(f"{count} {noun}{'s' if count != 1 else ''}")
        return ", ".join(parts) or "-"

    @admin.display(description="hosts (online / targeted)")
    def hosts(self, campaign: Campaign) -> str:
        return f"{campaign.online_count} / {campaign.targeted_count}"

    @admin.display(description="answers (rows / none / failed)")
    def answers(self, campaign: Campaign) -> str:
        counts = getattr(campaign, "answer_counts", None)
        if counts is None:  # outside the changelist (never on the list page)
            return ""
        return format_html(
            '{} / {} / <span style="{}">{}</span>',
            counts.get(ResultState.ROWS, 0),
            counts.get(ResultState.NO_ROWS, 0),
            "color:#cf222e" if counts.get(ResultState.FAILED) else "",
            counts.get(ResultState.FAILED, 0),
        )

    # --- the live pages -------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("new/", view(admin_views.live_query), name="campaigns_campaign_new"),
            path("new/count/", view(admin_views.target_count), name="campaigns_campaign_count"),
            path("<int:campaign_id>/stop/", view(admin_views.stop), name="campaigns_campaign_stop"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """No model form: adding a campaign means running a live query."""
        url = reverse("admin:campaigns_campaign_new")
        query = request.GET.urlencode()
        return HttpResponseRedirect(f"{url}?{query}" if query else url)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """A campaign's admin page is its live campaign page."""
        return admin_views.campaign_page(request, object_id)
