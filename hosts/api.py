"""REST API for hosts, teams and enroll secrets (``/api/v1/hosts/``, ``/teams/``, ``/enroll-secrets/``).

Access follows Fleet's roles (``hosts.permissions``): every queryset is narrowed to the teams the
user may see, so lists, details (404 outside one's teams) and writes agree. Users with no role
get 403. Host lists count at most a window of rows (``hosts.paginators``), never the full table.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from activities.api_hooks import AuditedViewSetMixin
from hosts import services
from hosts.filters import EnrollSecretFilterSet, HostFilterSet, with_host_counts
from hosts.models import EnrollSecret, Host, Team
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import (
    ADMIN_ROLES,
    ALL_ROLES,
    HOST_READ_ROLES,
    SECRET_READ_ROLES,
    FleetRolePermission,
    has_team_role,
    scope_queryset,
    visible_team_ids,
)
from hosts.serializers import EnrollSecretSerializer, HostSerializer, RefetchResultSerializer, TeamSerializer


@extend_schema_view(
    list=extend_schema(
        summary="List hosts",
        description=(
            "Hosts the caller can see. `count` is exact when `count_is_exact` is true; on big results it "
            "is a lower bound (a window of rows past the offset is counted, never the whole table)."
        ),
    ),
    retrieve=extend_schema(summary="Get a host"),
)
class HostViewSet(AuditedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Hosts and their vitals as the agents reported them."""

    serializer_class = HostSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = HOST_READ_ROLES
    write_roles = HOST_READ_ROLES  # the only write is a refetch, which Fleet lets any host reader ask
    pagination_class = CappedLimitOffsetPagination
    filterset_class = HostFilterSet
    # Exact or prefix matches on the identifiers keep searches on indexes; names match anywhere.
    search_fields = ["hostname", "computer_name", "=uuid", "=hardware_serial", "^primary_ip"]
    ordering_fields = [
        "id",
        "hostname",
        "computer_name",
        "platform",
        "os_version",
        "osquery_version",
        "created_at",
        "last_enrolled_at",
        "detail_updated_at",
        "seen__seen_time",
    ]
    ordering = ["-id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Host]:
        hosts = Host.objects.select_related("team", "seen")
        return scope_queryset(hosts, self.request.user, HOST_READ_ROLES)

    @extend_schema(
        summary="Refetch a host's details",
        request=None,
        responses=RefetchResultSerializer,
        description="The host sends fresh details at its next check-in.",
    )
    @action(detail=True, methods=["post"])
    def refetch(self, request: Request, pk: str | None = None) -> Response:
        host = self.get_object()
        services.request_refetch([host.pk])
        return Response({"refetch_requested": True})


class TeamViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """Teams. Global admins create and delete them; a team's admins may edit it."""

    serializer_class = TeamSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = ALL_ROLES
    write_roles = ADMIN_ROLES
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at", "host_count"]
    ordering = ["name"]
    lookup_value_regex = r"\d+"

    def team_id_of(self, team: Team) -> int:
        return team.pk

    def get_queryset(self) -> QuerySet[Team]:
        teams = with_host_counts(Team.objects.all())
        return scope_queryset(teams, self.request.user, ALL_ROLES, team_field="id")

    def _require_global_admin(self, what: str) -> None:
        if visible_team_ids(self.request.user, ADMIN_ROLES) is not None:
            raise PermissionDenied(f"Only global admins can {what} teams.")

    def perform_create(self, serializer: TeamSerializer) -> None:
        self._require_global_admin("create")
        serializer.save()

    def perform_destroy(self, instance: Team) -> None:
        self._require_global_admin("delete")
        instance.delete()


class EnrollSecretViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """Enroll secrets: readable by admins and maintainers of their scope, written by its admins."""

    serializer_class = EnrollSecretSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = SECRET_READ_ROLES
    write_roles = ADMIN_ROLES
    filterset_class = EnrollSecretFilterSet
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[EnrollSecret]:
        secrets = EnrollSecret.objects.select_related("team")
        return scope_queryset(secrets, self.request.user, SECRET_READ_ROLES)

    def _check_scope(self, team: Team | None) -> None:
        if not has_team_role(self.request.user, team.pk if team else None, ADMIN_ROLES):
            scope = f'team "{team.name}"' if team else "the global scope"
            raise PermissionDenied(f"You are not an admin of {scope}.")

    def perform_create(self, serializer: EnrollSecretSerializer) -> None:
        self._check_scope(serializer.validated_data.get("team"))
        serializer.save()

    def perform_update(self, serializer: EnrollSecretSerializer) -> None:
        self._check_scope(serializer.validated_data.get("team"))
        serializer.save()


def register(router: Any) -> None:
    """Mount this app's viewsets on the REST router (called from ``fleet.api_urls``)."""
    router.register("hosts", HostViewSet, basename="host")
    router.register("teams", TeamViewSet, basename="team")
    router.register("enroll-secrets", EnrollSecretViewSet, basename="enroll-secret")
