"""REST API for the audit trail: ``GET /api/v1/activities/`` and ``/api/v1/activities/<id>/``.

Newest first, paginated like the host list (``limit``/``offset``, a capped count), filtered by
``actor`` (user id or username), ``type`` (comma-separated for several), ``surface``,
``object_type`` and ``object_id``, ``team_id`` (0: global activities) and a time range
(``after`` inclusive, ``before`` exclusive, ISO 8601; a bad time is a 400). ``?search=`` matches
the object's and the actor's name. Read-only: there is no way to write, change or delete an
activity (405). Who reads what is ``activities.access``.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request

from activities.access import may_read_activities, visible_activities
from activities.choices import Surface
from activities.models import Activity
from fleet.numbers import parse_id
from hosts.paginators import CappedLimitOffsetPagination


class ActivitySerializer(serializers.ModelSerializer):
    """One activity, with Fleet's names for the actor fields (also the forwarded audit line)."""

    actor_id = serializers.IntegerField(read_only=True, allow_null=True)
    actor_full_name = serializers.CharField(
        source="actor_name", read_only=True, help_text="The actor's username at the time."
    )
    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    details = serializers.JSONField(
        read_only=True,
        help_text="Depends on the type: before/after values (`changes`, `before`, `after`), the SQL and "
        "targets of a live query, ids and names of a bulk operation.",
    )

    class Meta:
        model = Activity
        fields = [
            "id",
            "created_at",
            "type",
            "actor_id",
            "actor_full_name",
            "actor_email",
            "surface",
            "object_type",
            "object_id",
            "object_name",
            "team_id",
            "client_address",
            "details",
        ]
        read_only_fields = fields


class ActivityFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(method="_actor", help_text="The actor's user id or username.")
    type = django_filters.CharFilter(
        method="_types", help_text="An activity type (such as edited_saved_query); several comma-separated."
    )
    surface = django_filters.ChoiceFilter(choices=Surface.choices)
    object_type = django_filters.CharFilter(help_text="team, host, saved_query, pack, label, user, ...")
    object_id = django_filters.CharFilter()
    team_id = django_filters.NumberFilter(method="_team", help_text="Team id; 0 for global activities.")
    after = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="At or after this time (ISO 8601)."
    )
    before = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Before this time (ISO 8601)."
    )

    class Meta:
        model = Activity
        fields = ["actor", "type", "surface", "object_type", "object_id", "team_id", "after", "before"]

    def _actor(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        actor_id = parse_id(value)
        by_name = Q(actor_name=value)
        return queryset.filter(by_name | Q(actor_id=actor_id) if actor_id is not None else by_name)

    def _types(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        types = [t.strip() for t in value.split(",") if t.strip()]
        return queryset.filter(type__in=types) if types else queryset

    @extend_schema_field(OpenApiTypes.INT)
    def _team(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        team_id = int(value)
        return queryset.filter(team__isnull=True) if team_id == 0 else queryset.filter(team_id=team_id)


class MayReadActivities(BasePermission):
    message = "Your Fleet role does not allow reading the activity feed."

    def has_permission(self, request: Request, view: Any) -> bool:
        return may_read_activities(request.user)


@extend_schema_view(
    list=extend_schema(
        summary="List activities",
        description="The audit trail, newest first: every change, live query and login, with who, when, "
        "what and from which surface (console, rest, command, yaml, system). Global roles see every "
        "activity; team roles their teams' and their own; gitops none.",
    ),
    retrieve=extend_schema(summary="Get an activity"),
)
class ActivityViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail (read-only: activities cannot be changed or deleted)."""

    serializer_class = ActivitySerializer
    permission_classes = [IsAuthenticated, MayReadActivities]
    pagination_class = CappedLimitOffsetPagination
    filterset_class = ActivityFilterSet
    search_fields = ["object_name", "actor_name"]
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Activity]:
        return visible_activities(Activity.objects.all(), self.request.user)


def register(router: Any) -> None:
    """Mount the activity viewset on the REST router (called from ``fleet.api_urls``)."""
    router.register("activities", ActivityViewSet, basename="activity")
