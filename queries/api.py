"""REST API for saved queries (``/api/v1/queries/``).

Roles as in Fleet: every role reads the global queries and those of its teams; global admins,
maintainers and gitops write any query, team admins, maintainers and gitops their team's only
(a global query needs a global role). ``?team_id=`` (0: global queries), ``?platform=`` (queries
that run there), ``?scheduled=`` and ``?search=`` (name, description, SQL) filter the list.

Other apps add actions (such as ``report/``) with a mixin in their own module, listed in
``QueryViewSet``'s bases; the queryset and permissions here then apply to them too.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated

from activities.api_hooks import AuditedViewSetMixin
from hosts.choices import Role
from hosts.permissions import ALL_ROLES, FleetRolePermission, has_team_role, visible_team_ids
from queries.models import Query
from queries.serializers import QuerySerializer

QUERY_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER, Role.GITOPS})


def readable_queries(queryset: QuerySet[Query], user: Any) -> QuerySet[Query]:
    """Global queries and those of the user's teams (everything for global roles)."""
    team_ids = visible_team_ids(user, ALL_ROLES)
    if team_ids is None:
        return queryset
    return queryset.filter(Q(team__isnull=True) | Q(team_id__in=team_ids))


def may_write_query(user: Any, team_id: int | None) -> bool:
    return has_team_role(user, team_id, QUERY_WRITE_ROLES)


class QueryPermission(FleetRolePermission):
    """Reading a global query needs any role; the rest follows the query's team."""

    def has_object_permission(self, request: Any, view: Any, obj: Query) -> bool:
        if request.method in SAFE_METHODS and obj.team_id is None:
            return True  # the queryset already limits reads to readable queries
        return super().has_object_permission(request, view, obj)


class QueryFilterSet(django_filters.FilterSet):
    team_id = django_filters.NumberFilter(method="_team", help_text="Team id; 0 for global queries.")
    platform = django_filters.CharFilter(
        method="_platform", help_text="Queries that run on this platform (those with no platform run on all)."
    )
    scheduled = django_filters.BooleanFilter(method="_scheduled", help_text="true: interval > 0.")

    class Meta:
        model = Query
        fields = ["team_id", "platform", "scheduled", "logging"]

    def _team(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset.filter(team__isnull=True) if int(value) == 0 else queryset.filter(team_id=int(value))

    def _platform(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip().lower()
        return queryset.filter(Q(platform="") | Q(platform__contains=value)) if value else queryset

    def _scheduled(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        return queryset.filter(interval__gt=0) if value else queryset.filter(interval=0)


@extend_schema_view(
    list=extend_schema(summary="List saved queries"),
    retrieve=extend_schema(summary="Get a saved query"),
    create=extend_schema(
        summary="Save a query",
        description="A syntax error answers 400 with the parser's message; unknown tables come back "
        "as `warnings` (the query is saved).",
    ),
    update=extend_schema(summary="Replace a saved query"),
    partial_update=extend_schema(summary="Change a saved query"),
    destroy=extend_schema(summary="Delete a saved query (and its schedule in packs)"),
)
class QueryViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """The query library: SQL, platforms, schedule and where results go."""

    serializer_class = QuerySerializer
    permission_classes = [IsAuthenticated, QueryPermission]
    read_roles = ALL_ROLES
    write_roles = QUERY_WRITE_ROLES
    filterset_class = QueryFilterSet
    search_fields = ["name", "description", "query"]
    ordering_fields = ["id", "name", "interval", "created_at", "updated_at"]
    ordering = ["name"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Query]:
        return readable_queries(Query.objects.select_related("team", "author"), self.request.user)

    def _check_team(self, serializer: QuerySerializer) -> None:
        team = serializer.validated_data.get(
            "team", serializer.instance.team if serializer.instance else None
        )
        if not may_write_query(self.request.user, team.pk if team else None):
            scope = f'team "{team.name}"' if team else "the global queries"
            raise PermissionDenied(f"Your role does not allow writing queries of {scope}.")

    def perform_create(self, serializer: QuerySerializer) -> None:
        self._check_team(serializer)
        serializer.save(author=self.request.user)

    def perform_update(self, serializer: QuerySerializer) -> None:
        self._check_team(serializer)
        serializer.save()


def register(router: Any) -> None:
    """Mount this app's viewsets on the REST router (called from ``fleet.api_urls``)."""
    router.register("queries", QueryViewSet, basename="query")
