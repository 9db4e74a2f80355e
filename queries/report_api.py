"""REST: a saved query's report, ``GET /api/v1/queries/<id>/report/`` (Fleet's query report API).

The rows are every visible host's latest snapshot, flattened and paginated with ``limit`` /
``offset`` (in host id order), each with the host's id, hostname and when it was fetched. Who sees
what follows Fleet's roles: a global query is visible to every role that may read host data, a
team's query to that team's readers (and global ones); either way the rows come only from hosts
the caller may see, so a team observer reads a global query's report for their own hosts only.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.permissions import HOST_READ_ROLES, FleetRolePermission, visible_team_ids
from queries.models import Query
from queries.reports import report_page


class ReportRowSerializer(serializers.Serializer):
    host_id = serializers.IntegerField()
    hostname = serializers.CharField()
    last_fetched = serializers.DateTimeField()
    columns = serializers.DictField(child=serializers.CharField(), help_text="The row, as osquery's strings.")


class QueryReportSerializer(serializers.Serializer):
    query_id = serializers.IntegerField()
    count = serializers.IntegerField(help_text="Rows kept over every host the caller may see.")
    host_count = serializers.IntegerField(help_text="Hosts with at least one row.")
    report_clipped = serializers.BooleanField(
        help_text="Some host reported more rows than the report keeps (QUERY_REPORT_CAP)."
    )
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ReportRowSerializer(many=True)


class HostIdSerializer(serializers.Serializer):
    host_id = serializers.IntegerField(required=False, min_value=1)


class ReportPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


class QueryReportView(APIView):
    """The latest results of a scheduled snapshot query, per host."""

    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = HOST_READ_ROLES

    @extend_schema(
        summary="Get a query's report",
        description=(
            "The latest snapshot each host reported for the query, flattened into rows and paginated "
            "(`limit`, `offset`; host id order). Only hosts the caller may see are included."
        ),
        parameters=[
            OpenApiParameter("limit", int, description="Rows per page (default 100, at most 1000)."),
            OpenApiParameter("offset", int, description="Rows to skip."),
            OpenApiParameter("host_id", int, description="Only this host's rows."),
        ],
        responses=QueryReportSerializer,
        tags=["queries"],
    )
    def get(self, request: Request, pk: int) -> Response:
        team_ids = visible_team_ids(request.user, HOST_READ_ROLES)
        queries = Query.objects.only("id", "team_id")
        if team_ids is not None:
            # Global queries are shared with every team; a team's query only with its own readers.
            queries = queries.filter(team_id__isnull=True) | queries.filter(team_id__in=team_ids)
        query = get_object_or_404(queries, pk=pk)
        params = HostIdSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        paginator = ReportPagination()
        limit = paginator.get_limit(request) or paginator.default_limit
        offset = paginator.get_offset(request)
        page = report_page(query.id, team_ids, offset, limit, params.validated_data.get("host_id"))
        paginator.request, paginator.limit, paginator.offset = request, limit, offset
        paginator.count = page.count
        body: dict[str, Any] = {
            "query_id": query.id,
            "count": page.count,
            "host_count": page.host_count,
            "report_clipped": page.clipped,
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "results": [
                {
                    "host_id": row.host_id,
                    "hostname": row.hostname,
                    "last_fetched": serializers.DateTimeField().to_representation(row.last_fetched),
                    "columns": row.columns,
                }
                for row in page.rows
            ],
        }
        return Response(body)
