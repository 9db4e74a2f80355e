"""REST API for the software inventory: ``/api/v1/software/`` (titles, with versions and host
counts), ``/api/v1/software/<id>/`` and ``/api/v1/hosts/<id>/software/``.

Access follows ``hosts.permissions``: host readers (admin, maintainer, observer, observer+)
globally or on teams; gitops and users without a role get 403. A team user sees the titles on
their teams' hosts, counted over those hosts only; a host outside their teams is a 404. Counts
are the kept ones (``software.counts``), as of the last pass; ``team_id`` and ``platform`` choose
which hosts are counted (and so which titles are listed: those with at least one such host).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import filters, mixins, serializers, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.numbers import parse_id
from hosts.models import Host
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import HOST_READ_ROLES, FleetRolePermission, scope_queryset
from software import inventory, tasks
from software.filters import HostSoftwareFilterSet, SoftwareTitleFilterSet
from software.models import HostSoftware, SoftwareTitle
from software.serializers import HostSoftwareSerializer, SoftwareTitleSerializer

_SCOPE_PARAMETERS = [
    OpenApiParameter(
        "team_id", OpenApiTypes.INT, description="Count only this team's hosts (0: hosts without a team)."
    ),
    OpenApiParameter(
        "platform",
        OpenApiTypes.STR,
        description="Count only hosts of this platform (darwin, windows, ubuntu, ...; linux: every Linux).",
    ),
]


class ScopedReadPermission(FleetRolePermission):
    """A host reader anywhere may read; what they see of each object is scoped by the queryset
    (a title is global, but its counts and its presence in the list follow the user's teams)."""

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return self.has_permission(request, view)


class HostCountOrdering(filters.OrderingFilter):
    """``?ordering=host_count`` sorts by the counts shown (the annotation ``hosts_count``)."""

    def get_ordering(self, request: Request, queryset: QuerySet, view: Any) -> list[str]:
        ordering = super().get_ordering(request, queryset, view) or []
        return [
            field.replace("host_count", "hosts_count") if field.lstrip("-") == "host_count" else field
            for field in ordering
        ]

    def remove_invalid_fields(
        self, queryset: QuerySet, fields: list[str], view: Any, request: Request
    ) -> list[str]:
        allowed = {"host_count", "name", "source", "id"}
        return [f for f in fields if f.lstrip("-") in allowed] + ["name", "id"]


@extend_schema_view(
    list=extend_schema(
        summary="List software",
        description=(
            "Software titles on the hosts you may see, most common first, each with its versions. "
            "`host_count` counts hosts in scope as of the last count (refreshed in the background)."
        ),
        parameters=_SCOPE_PARAMETERS,
    ),
    retrieve=extend_schema(summary="Get a software title", parameters=_SCOPE_PARAMETERS),
)
class SoftwareTitleViewSet(viewsets.ReadOnlyModelViewSet):
    """Software titles and versions with host counts (read-only: agents report software)."""

    serializer_class = SoftwareTitleSerializer
    permission_classes = [IsAuthenticated, ScopedReadPermission]
    read_roles = HOST_READ_ROLES
    pagination_class = CappedLimitOffsetPagination
    filterset_class = SoftwareTitleFilterSet
    filter_backends = [DjangoFilterBackend, filters.SearchFilter, HostCountOrdering]
    search_fields = ["name", "bundle_identifier"]
    ordering = ["-host_count", "name", "id"]
    lookup_value_regex = r"\d+"

    def _scope(self) -> inventory.Scope:
        params = self.request.query_params
        team_id = None
        if params.get("team_id", "") != "":
            team_id = parse_id(params["team_id"])
            if team_id is None:
                raise serializers.ValidationError({"team_id": ["A team id is a number."]})
        # A team outside the user's raises Django's PermissionDenied: DRF answers 403.
        return inventory.scope_for(self.request.user, team_id, params.get("platform", "")[:255])

    def get_queryset(self) -> QuerySet[SoftwareTitle]:
        scope = self._scope()
        return inventory.with_versions(inventory.titles(scope), scope)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tasks.refresh_counts_if_due()  # embedded default only (no beat); never on a check-in
        return super().list(request, *args, **kwargs)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tasks.refresh_counts_if_due()
        return super().retrieve(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(
        summary="List a host's software",
        description=(
            "What the host reported at its last detail refresh, by name. 404 for a host you may not see."
        ),
        parameters=[OpenApiParameter("host_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
    )
)
class HostSoftwareViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """One host's software (``/api/v1/hosts/<host_id>/software/``)."""

    serializer_class = HostSoftwareSerializer
    permission_classes = [IsAuthenticated, ScopedReadPermission]
    read_roles = HOST_READ_ROLES
    pagination_class = CappedLimitOffsetPagination
    filterset_class = HostSoftwareFilterSet
    filter_backends = [DjangoFilterBackend, filters.SearchFilter]
    search_fields = ["version__title__name"]

    def get_queryset(self) -> QuerySet[HostSoftware]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request kwargs
            return HostSoftware.objects.none()
        hosts = scope_queryset(Host.objects.all(), self.request.user, HOST_READ_ROLES)
        host = get_object_or_404(hosts.only("id"), pk=self.kwargs["host_id"])
        return inventory.host_software(host.pk)


def register(router: Any) -> None:
    """Mount the software viewsets on the REST router (called from ``fleet.api_urls``)."""
    router.register("software", SoftwareTitleViewSet, basename="software")
    router.register(r"hosts/(?P<host_id>\d+)/software", HostSoftwareViewSet, basename="host-software")
