"""REST API for live-query campaigns (``/api/v1/campaigns/``).

Starting, stopping and the rules about who may do what live in ``campaigns.services``; this
module maps them to HTTP. Its own work is reading: the campaign list (the creator sees their own,
global admins everyone's), one campaign, its per-host results with CSV export, and the
synchronous ``run/`` form for scripts, which waits in the request for the online targets.

Who may look at a campaign is ``services.may_watch`` (the creator and admins), the same rule the
WebSocket applies: a campaign that exists but is someone else's answers 403, one that does not
exist 404.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from campaigns import services
from campaigns.filters import CampaignFilterSet
from campaigns.models import Campaign, CampaignResult, ResultState
from campaigns.serializers import (
    OFFLINE,
    PENDING,
    RESULT_STATES,
    CampaignCreateSerializer,
    CampaignRunResponseSerializer,
    CampaignRunSerializer,
    CampaignSerializer,
    ErrorSerializer,
    PaginatedResultsSerializer,
    breakdown_of,
    page_breakdowns,
)
from fleet.csvsafe import SafeWriter, safe_cell
from fleet.held_requests import held_request
from hosts.models import Host
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import has_any_role

RUN_TIMEOUT_CAP = 120.0  # seconds; a request held longer than this is a worker lost to one script
POLL_INTERVAL = 0.2
_HOSTNAME_CHUNK = 1000
_START_ERRORS = {400: ErrorSerializer, 403: ErrorSerializer}
_OBJECT_ERRORS = {403: ErrorSerializer, 404: ErrorSerializer}


class CampaignAPIError(APIException):
    """A ``CampaignError`` (or a request-level refusal) as a JSON error with its own status."""

    def __init__(self, message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        self.status_code = status_code
        super().__init__(detail=message)


class HasFleetRole(BasePermission):
    """Users with no role at all get 403, not an empty list (the rule of ``hosts.permissions``)."""

    message = "Your Fleet role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return has_any_role(request.user)


class MayWatchCampaign(BasePermission):
    message = "Only the campaign's creator and admins may see or stop it."

    def has_object_permission(self, request: Request, view: Any, obj: Campaign) -> bool:
        return services.may_watch(request.user, obj)


class CSVRenderer(BaseRenderer):
    """Lets ``?format=csv`` through content negotiation; the export itself is built in the view."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        if isinstance(data, bytes):
            return data
        # Only errors (403, 404, 400) come here as data: a one-cell CSV carrying the message.
        message = data.get("message") if isinstance(data, dict) else None
        return f"message\r\n{_csv_cell(str(message or data))}\r\n".encode()


def _csv_cell(value: str) -> str:
    return '"' + safe_cell(value).replace('"', '""') + '"'


class ResultsPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


def _datetime(value: Any) -> str | None:
    return serializers.DateTimeField().to_representation(value) if value else None


def _stored_entry(result: CampaignResult) -> dict[str, Any]:
    return {**services.result_message(result), "received_at": _datetime(result.received_at)}


def _hostnames(host_ids: Sequence[int]) -> dict[int, str]:
    return dict(Host.objects.filter(id__in=list(host_ids)).values_list("id", "hostname"))


def _unanswered_entries(part: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """Entries for hosts that owe an answer, with their current hostnames (one query)."""
    names = _hostnames([host_id for host_id, _ in part]) if part else {}
    return [
        {
            "id": None,
            "host_id": host_id,
            "hostname": names.get(host_id, ""),
            "state": state,
            "rows": [],
            "row_count": 0,
            "error": None,
            "received_at": None,
        }
        for host_id, state in part
    ]


class ResultEntries:
    """A campaign's per-host entries: stored answers by arrival, then the hosts still owing one.

    Pending and offline hosts are not rows in the database (the store tracks who is pending), so
    they are derived as the targeted hosts minus those that answered, split by who was offline at
    the start. The object slices like a queryset, so DRF's paginators can page over both parts.
    """

    def __init__(self, campaign: Campaign, host_id: int | None = None, state: str | None = None) -> None:
        answered = CampaignResult.objects.filter(campaign=campaign).order_by("id")
        if host_id is not None:
            answered = answered.filter(host_id=host_id)
        self.unanswered: list[tuple[int, str]] = []
        if state in (None, PENDING, OFFLINE):
            # One snapshot of who answered, so no host is listed both as answered and as pending.
            seen = list(CampaignResult.objects.filter(campaign=campaign).values_list("id", "host_id"))
            answered = answered.filter(id__lte=max((i for i, _ in seen), default=0))
            done = {h for _, h in seen}
            offline = set(campaign.offline_host_ids)
            for target in campaign.host_ids:
                if target in done or (host_id is not None and target != host_id):
                    continue
                target_state = OFFLINE if target in offline else PENDING
                if state in (None, target_state):
                    self.unanswered.append((target, target_state))
        if state is not None:
            answered = answered.filter(state=state) if state in ResultState.values else answered.none()
        self.answered = answered
        self._answered_count: int | None = None

    def answered_count(self) -> int:
        if self._answered_count is None:
            self._answered_count = self.answered.count()
        return self._answered_count

    def count(self) -> int:
        return self.answered_count() + len(self.unanswered)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, window: slice) -> list[dict[str, Any]]:
        start, stop = window.start or 0, window.stop if window.stop is not None else self.count()
        n = self.answered_count()
        entries = [_stored_entry(r) for r in self.answered[start : min(stop, n)]] if start < n else []
        if stop > n:
            entries += _unanswered_entries(self.unanswered[max(start - n, 0) : stop - n])
        return entries


def _result_filters(request: Request) -> tuple[int | None, str | None]:
    raw_host = request.query_params.get("host_id", "").strip()
    if raw_host and not raw_host.isdigit():
        raise CampaignAPIError("host_id must be a host id (a number)")
    state = request.query_params.get("state") or None
    if state is not None and state not in RESULT_STATES:
        raise CampaignAPIError(f"unknown state {state!r}: use one of {', '.join(RESULT_STATES)}")
    return (int(raw_host) if raw_host else None), state


def _row_columns(rows_per_host: Iterable[list[dict[str, Any]]]) -> list[str]:
    """The union of the rows' columns, in the order they first appear."""
    columns: dict[str, None] = {}
    for rows in rows_per_host:
        for row in rows or []:
            if isinstance(row, dict):
                columns.update(dict.fromkeys(row))
    return list(columns)


def results_csv(campaign: Campaign, entries: ResultEntries) -> HttpResponse:
    """One line per row (host, then every column any host returned); one line per host without rows.

    Two passes over the stored answers (columns first, then lines) keep only the CSV in memory;
    rows per campaign are capped (``LIVE_QUERY["MAX_ROWS"]``), so the export is bounded too.
    """
    columns = _row_columns(entries.answered.values_list("rows", flat=True).iterator(chunk_size=500))
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-results.csv"'
    writer = SafeWriter(response)
    writer.writerow(["host_id", "hostname", *columns, "state", "error"])
    blank = [""] * len(columns)
    for result in entries.answered.iterator(chunk_size=500):
        rows = [row for row in result.rows or [] if isinstance(row, dict)]
        for row in rows:
            writer.writerow(
                [result.host_id, result.hostname, *(row.get(c, "") for c in columns), result.state, ""]
            )
        if not rows:
            writer.writerow([result.host_id, result.hostname, *blank, result.state, result.error])
    for start in range(0, len(entries.unanswered), _HOSTNAME_CHUNK):
        for entry in _unanswered_entries(entries.unanswered[start : start + _HOSTNAME_CHUNK]):
            writer.writerow([entry["host_id"], entry["hostname"], *blank, entry["state"], ""])
    return response


@extend_schema_view(
    list=extend_schema(
        summary="List campaigns",
        description="Newest first. Global admins see every campaign; everyone else the ones they started.",
    ),
    retrieve=extend_schema(summary="Get a campaign", responses={200: CampaignSerializer, **_OBJECT_ERRORS}),
)
class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Live-query campaigns: start one, follow its answers, export them, stop it."""

    serializer_class = CampaignSerializer
    permission_classes = [IsAuthenticated, HasFleetRole, MayWatchCampaign]
    pagination_class = CappedLimitOffsetPagination
    filterset_class = CampaignFilterSet
    search_fields = ["sql", "query_name", "created_by__username"]
    ordering_fields = ["id", "created_at"]
    ordering = ["-created_at", "-id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Campaign]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Campaign.objects.none()
        campaigns = Campaign.objects.select_related("created_by")
        if self.action == "list":
            # Resolved host ids can be long lists; a page of campaigns does not need them.
            campaigns = services.watchable(campaigns.defer("host_ids"), self.request.user)
        return campaigns

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        campaigns = page if page is not None else list(queryset)
        context = {**self.get_serializer_context(), "breakdowns": page_breakdowns(campaigns)}
        data = self.get_serializer(campaigns, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def _start(
        self, request: Request, serializer_class: type[serializers.Serializer]
    ) -> tuple[Campaign, dict]:
        """Create the campaign through ``services.create_campaign``, its errors becoming 4xx JSON."""
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        sql, query_id = data.get("sql"), data.get("query_id")
        if query_id is not None and sql:
            raise CampaignAPIError("give either sql or query_id, not both")
        if query_id is None and sql is None:
            raise CampaignAPIError("sql (or query_id) is required")
        try:
            if query_id is not None:
                campaign = services.create_campaign_for_query(request.user, query_id, data.get("targets"))
            else:
                campaign = services.create_campaign(request.user, sql, data.get("targets"))
        except services.CampaignError as exc:
            raise CampaignAPIError(str(exc), exc.status) from None
        return campaign, data

    @extend_schema(
        summary="Start a live query",
        description=(
            "Resolves the targets once (hosts by id, hostname, uuid or serial; teams by id or name; "
            "`all`) within the teams the caller may query, and sends the SQL to each target at its next "
            "check-in. Watch it on `/ws/campaigns/<id>/` or read `results/`."
        ),
        request=CampaignCreateSerializer,
        responses={201: CampaignSerializer, **_START_ERRORS},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        campaign, _ = self._start(request, CampaignCreateSerializer)
        return Response(self.get_serializer(campaign).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Run a live query and wait for the answers",
        description=(
            "Starts a campaign like `POST /campaigns/`, then waits until every target that was online "
            "answered, or `timeout` seconds (default `LIVE_QUERY_REST_PERIOD`, 25 s; at most 120), and "
            "returns every answer at once. On a timeout the campaign keeps running: hosts that answer "
            "later appear in `results/`; stop it with `stop/`. 503 (with `Retry-After`), nothing "
            "started: the server process already holds as many waiting requests as it may."
        ),
        request=CampaignRunSerializer,
        responses={200: CampaignRunResponseSerializer, **_START_ERRORS, 503: ErrorSerializer},
    )
    @action(detail=False, methods=["post"])
    def run(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with held_request():  # refused before the campaign starts when this process holds enough
            campaign, data = self._start(request, CampaignRunSerializer)
            timeout = data.get("timeout")
            if timeout is None:
                timeout = settings.LIVE_QUERY["REST_PERIOD"]
            self._wait(campaign, min(float(timeout), RUN_TIMEOUT_CAP))
        campaign.refresh_from_db()
        results = list(CampaignResult.objects.filter(campaign=campaign).order_by("id"))
        # Counts from the very answers returned, so the summary and the list agree.
        counts = breakdown_of(campaign, results)
        summary = services.status_summary(campaign, counts)
        context = {**self.get_serializer_context(), "breakdowns": {campaign.pk: counts}}
        return Response(
            {
                "campaign": CampaignSerializer(campaign, context=context).data,
                "results": [services.result_message(r) for r in results],
                "summary": summary,
                "timed_out": summary["status"] != "finished",
            }
        )

    @staticmethod
    def _wait(campaign: Campaign, seconds: float) -> None:
        """Until every target answered or ``seconds`` passed. It polls the database: answers may
        reach any web process, and all of them write there."""
        deadline = time.monotonic() + seconds
        while services.status_summary(campaign)["status"] != "finished":
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL_INTERVAL, left))
            campaign.refresh_from_db(fields=["status", "ended_at"])

    @extend_schema(
        summary="Stop a campaign",
        description="Hosts no longer receive it; answers already stored are kept. Stopping an ended "
        "campaign changes nothing.",
        request=None,
        responses={200: CampaignSerializer, **_OBJECT_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        campaign = self.get_object()
        services.stop_campaign(campaign)
        campaign.refresh_from_db()
        return Response(self.get_serializer(campaign).data)

    @extend_schema(
        summary="A campaign's results, per host",
        description=(
            "Stored answers in arrival order (`rows`, `no_rows`, `failed`), then the targets that have "
            "not answered (`pending`: online at the start; `offline`: offline at the start). "
            "`?format=csv` exports every matching entry: one line per row, host id and hostname first, "
            "then every column any host returned, then state and error; hosts without rows get one line."
        ),
        parameters=[
            OpenApiParameter("host_id", OpenApiTypes.INT, description="Only this host."),
            OpenApiParameter("state", OpenApiTypes.STR, enum=[*RESULT_STATES]),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
            # Detail actions get no pagination parameters from drf-spectacular; these pages have them.
            OpenApiParameter("limit", OpenApiTypes.INT, description="Entries per page (at most 1000)."),
            OpenApiParameter("offset", OpenApiTypes.INT, description="Entries to skip."),
        ],
        responses={
            (200, "application/json"): PaginatedResultsSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
            400: ErrorSerializer,
            **_OBJECT_ERRORS,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer],
        pagination_class=ResultsPagination,
        filter_backends=[],
    )
    def results(self, request: Request, *args: Any, **kwargs: Any) -> Response | HttpResponse:
        campaign = self.get_object()
        host_id, state = _result_filters(request)
        entries = ResultEntries(campaign, host_id, state)
        if request.accepted_renderer.format == "csv":
            return results_csv(campaign, entries)
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(page)


def register(router: Any) -> None:
    """Mount this app's viewsets on the REST router (called from ``fleet.api_urls``)."""
    router.register("campaigns", CampaignViewSet, basename="campaign")
