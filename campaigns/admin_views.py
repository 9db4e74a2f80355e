"""The console's live-query pages: ask hosts a question in SQL, then watch the answers arrive.

- the live-query page (``new/``): SQL, a target picker with a live count of how many targets are
  online (``new/count/``, so an admin sees *before* running that half the fleet is offline), Run;
- the campaign page (the campaign's admin page): a results table filled over the campaign's
  WebSocket, the per-host breakdown, the hosts that have not answered yet (Fleet's users could
  never tell who was missing), Stop, and a CSV export of the kept results.

Every rule (who may run, who may watch, what input is valid) is ``campaigns.services``'; these
views only shape requests and pages. The pages are admin views, so users without a console role are sent to
the login page first; users whose role may not run live queries get a page that says so (403).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from campaigns import services
from campaigns.forms import MAX_PRESELECTED, LiveQueryForm, TargetForm, parse_id_list
from campaigns.models import Campaign, CampaignResult
from campaigns.services import CampaignError, Targets
from fleet.numbers import parse_id
from hosts.choices import HostStatus, Role
from hosts.models import Host, Label, Team
from hosts.permissions import has_any_role, visible_team_ids
from hosts.status import status_of
from queries.models import Query

# The server-rendered list of hosts that have not answered stops here; the counts stay exact.
NOT_ANSWERED_SHOWN = 50  # per list; a scroll box holds them, the counts stay exact
# Where the REST API serves a campaign's kept results as CSV (session auth works there too).
CSV_EXPORT_PATH = "/api/v1/campaigns/{id}/results/?format=csv"
WEBSOCKET_PATH = "/ws/campaigns/{id}/"


def may_run_live_queries(user: Any) -> bool:
    """``services.check_may_run`` as a yes/no, for menus, buttons and admin permissions."""
    try:
        services.check_may_run(user)
    except CampaignError:
        return False
    return True


def _saved_query(request: HttpRequest) -> Query | None:
    """The saved query named by ``?query_id=`` (or the posted one), if any; 404 when not visible."""
    query_id = parse_id(request.POST.get("query_id") or request.GET.get("query_id"))
    if query_id is None:
        return None
    try:
        return services.saved_query_for(request.user, query_id)
    except CampaignError:
        raise Http404("no such query") from None


def _roles_for(query: Query | None) -> frozenset[str]:
    """Who may run it: observers too for a saved query marked observer_can_run (as in REST)."""
    if query is not None and query.observer_can_run:
        return services.RUN_ROLES | {Role.OBSERVER}
    return services.RUN_ROLES


def _refused(request: HttpRequest, query: Query | None) -> TemplateResponse:
    """Why the user may not run this, and what they may run instead (observers: marked queries)."""
    allowed = Query.objects.none()
    if query is None and has_any_role(request.user, {Role.OBSERVER}):
        visible = visible_team_ids(request.user)
        allowed = Query.objects.filter(observer_can_run=True).order_by("name")
        if visible is not None:
            allowed = allowed.filter(Q(team__isnull=True) | Q(team_id__in=visible))
    context = _context(request, "Live query not allowed", saved_query=query, allowed_queries=allowed[:100])
    return TemplateResponse(request, "admin/campaigns/campaign/refused.html", context, status=403)


def _sentence(message: str) -> str:
    """Services speak in lower case for APIs; the console shows sentences."""
    message = message.strip()
    return message[:1].upper() + message[1:] if message else message


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "title": title,
        "opts": Campaign._meta,
        "app_label": Campaign._meta.app_label,
        **extra,
    }


def campaign_url(campaign_id: int) -> str:
    return reverse("admin:campaigns_campaign_change", args=[campaign_id])


# --- the live-query page ---------------------------------------------------------------------------
def live_query(request: HttpRequest) -> HttpResponse:
    """GET: the empty form (``?host_ids=1,2`` preselects hosts, ``?sql=`` fills the SQL).
    POST: create the campaign and go to its page; any ``CampaignError`` is a form error and
    nothing is started. ``?query_id=`` runs a saved query as it is (its SQL is not editable),
    which observers may do for queries marked observer_can_run."""
    query = _saved_query(request)
    roles = _roles_for(query)
    try:
        services.check_may_run(request.user, roles)
    except CampaignError:
        return _refused(request, query)
    if request.method == "POST":
        form = LiveQueryForm(request.POST, user=request.user, roles=roles, saved_query=query)
        if form.is_valid():
            user, targets = request.user, form.targets()
            try:
                if query is None:
                    campaign = services.create_campaign(user, form.cleaned_data["sql"], targets)
                else:
                    campaign = services.create_campaign_for_query(user, query.pk, targets)
            except CampaignError as exc:
                form.add_error(None, _sentence(str(exc)))
            else:
                return HttpResponseRedirect(campaign_url(campaign.pk))
    else:
        form = LiveQueryForm(
            user=request.user,
            preselected=parse_id_list(request.GET.get("host_ids")),
            initial={"sql": query.query if query else request.GET.get("sql", "")},
            roles=roles,
            saved_query=query,
        )
    context = _context(
        request,
        f"Run {query.name}" if query else "New live query",
        form=form,
        saved_query=query,
        count_url=reverse("admin:campaigns_campaign_count") + (f"?query_id={query.pk}" if query else ""),
    )
    return TemplateResponse(request, "admin/campaigns/campaign/live_query.html", context)


def target_count(request: HttpRequest) -> JsonResponse:
    """How many hosts the picked targets cover and how many are online now, for the live count.

    POST (what the page's script sends, since a pasted host list can outgrow a URL) or GET; the
    same fields as the live-query form. Errors (unknown host or team, nothing picked) come back
    as ``{"error": ...}`` with the status ``services`` gives them.
    """
    roles = _roles_for(_saved_query(request))
    try:
        services.check_may_run(request.user, roles)
    except CampaignError as exc:
        return JsonResponse({"error": _sentence(str(exc))}, status=exc.status)
    data = request.POST if request.method == "POST" else request.GET
    form = TargetForm(data, user=request.user, roles=roles)
    if not form.is_valid():
        errors = [_sentence(e) for field_errors in form.errors.values() for e in field_errors]
        return JsonResponse({"error": " ".join(errors)}, status=400)
    try:
        host_ids = services.resolve_targets(request.user, Targets.parse(form.targets()), roles)
    except CampaignError as exc:
        return JsonResponse({"error": _sentence(str(exc))}, status=exc.status)
    counts = services.count_targets(host_ids)
    return JsonResponse(
        {
            "targeted": counts.targeted,
            "online": counts.online,
            "offline": counts.offline,
            "missing": counts.missing,
        }
    )


# --- the campaign page -----------------------------------------------------------------------------
def watchable_campaign(request: HttpRequest, campaign_id: Any) -> Campaign:
    """The campaign, if the user may watch it (its creator, or an admin): else 404 or 403."""
    pk = parse_id(str(campaign_id))
    if pk is None:
        raise Http404("No such campaign.")
    campaign = Campaign.objects.select_related("created_by").filter(pk=pk).first()
    if campaign is None:
        raise Http404("No such campaign.")
    if not services.may_watch(request.user, campaign):
        raise PermissionDenied("Only the campaign's creator and admins may watch it.")
    return campaign


def describe_targets(campaign: Campaign) -> list[str]:
    """What the admin asked for, in words: "All hosts", team names, host names (ids looked up)."""
    parts: list[str] = []
    teams = campaign.target_teams
    if campaign.target_all:
        parts.append("All hosts")
    if teams:
        names = dict(
            Team.objects.filter(id__in=[t for t in teams if isinstance(t, int)]).values_list("id", "name")
        )
        parts.append("Teams: " + ", ".join(names.get(t, str(t)) if isinstance(t, int) else t for t in teams))
    if campaign.target_hosts:
        ids = [h for h in campaign.target_hosts if isinstance(h, int)]
        names = dict(Host.objects.filter(id__in=ids[:100]).values_list("id", "hostname")) if ids else {}
        shown = [names.get(h, f"#{h}") if isinstance(h, int) else str(h) for h in campaign.target_hosts[:100]]
        more = len(campaign.target_hosts) - len(shown)
        parts.append("Hosts: " + ", ".join(shown) + (f" and {more} more" if more > 0 else ""))
    if campaign.target_labels:
        ids = [i for i in campaign.target_labels if isinstance(i, int)]
        names = dict(Label.objects.filter(id__in=ids).values_list("id", "name")) if ids else {}
        parts.append("Labels: " + ", ".join(str(names.get(i, i)) for i in campaign.target_labels))
    return parts


def _host_rows(host_ids: list[int]) -> list[dict[str, Any]]:
    """The hosts as the not-answered list shows them, in the given order; deleted ones by id."""
    shown = host_ids[:NOT_ANSWERED_SHOWN]
    hosts = Host.objects.filter(id__in=shown).select_related("seen", "team").in_bulk()
    rows = []
    for host_id in shown:
        host = hosts.get(host_id)
        if host is None:
            rows.append({"id": host_id, "name": f"host {host_id} (deleted)", "url": None})
            continue
        seen = getattr(host, "seen", None)
        state = status_of(seen and seen.seen_time, seen and seen.offline_after)
        rows.append(
            {
                "id": host_id,
                "name": host.display_name,
                "url": reverse("admin:hosts_host_change", args=[host_id]),
                "status": HostStatus(state).label,
                "status_value": state,
                "last_seen": seen.seen_time if seen else None,
                "team": host.team.name if host.team_id else "",
            }
        )
    return rows


def campaign_page(request: HttpRequest, campaign_id: Any) -> TemplateResponse:
    """The campaign: SQL, targets, counts and not-answered hosts as of now; the script then keeps
    them current and fills the results table from the WebSocket (which first replays what is
    stored, so reloading or coming back days later shows the same table)."""
    campaign = watchable_campaign(request, campaign_id)
    answered = set(CampaignResult.objects.filter(campaign=campaign).values_list("host_id", flat=True))
    offline_at_start = set(campaign.offline_host_ids)
    unanswered = [h for h in campaign.host_ids if h not in answered]
    pending_ids = [h for h in unanswered if h not in offline_at_start]
    offline_ids = [h for h in unanswered if h in offline_at_start]
    summary = services.status_summary(campaign)
    context = _context(
        request,
        f"Live query {campaign.pk}",
        campaign=campaign,
        targets=describe_targets(campaign),
        totals=services.totals(campaign),
        summary=summary,
        pending_hosts=_host_rows(pending_ids),
        pending_more=max(0, len(pending_ids) - NOT_ANSWERED_SHOWN),
        offline_hosts=_host_rows(offline_ids),
        offline_more=max(0, len(offline_ids) - NOT_ANSWERED_SHOWN),
        websocket_path=WEBSOCKET_PATH.format(id=campaign.pk),
        csv_url=CSV_EXPORT_PATH.format(id=campaign.pk),
        stop_url=reverse("admin:campaigns_campaign_stop", args=[campaign.pk]),
        rerun_url=reverse("admin:campaigns_campaign_new") + "?" + urlencode({"sql": campaign.sql}),
        host_url_template=reverse("admin:hosts_host_change", args=[0]),
        may_run=may_run_live_queries(request.user),
    )
    return TemplateResponse(request, "admin/campaigns/campaign/campaign.html", context)


def stop(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The Stop button (POST only): no host is asked any more; answers so far are kept."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    campaign = watchable_campaign(request, campaign_id)
    if services.stop_campaign(campaign):
        messages.success(request, f"Stopped live query {campaign.pk}; the answers so far are kept.")
    else:
        messages.info(request, f"Live query {campaign.pk} had already ended.")
    return redirect(campaign_url(campaign.pk))


# --- the host list's action ------------------------------------------------------------------------
@admin.action(description="Live query the selected hosts", permissions=["live_query"])
def live_query_hosts(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Host]) -> Any:
    """Open the live-query page with the selected hosts ticked (ids in the URL, so at most
    ``MAX_PRESELECTED``; bigger selections are better targeted by team or as all hosts)."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: MAX_PRESELECTED + 1])
    if len(ids) > MAX_PRESELECTED:
        modeladmin.message_user(
            request,
            f"Select at most {MAX_PRESELECTED} hosts to live query; for more, target their team or all "
            "hosts on the live-query page.",
            messages.WARNING,
        )
        return None
    query = ",".join(map(str, ids))
    return HttpResponseRedirect(f"{reverse('admin:campaigns_campaign_new')}?host_ids={query}")
