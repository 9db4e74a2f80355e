"""REST API for packs (``/api/v1/packs/``) and their scheduled queries (``/api/v1/packs/<id>/scheduled/``).

Packs are global objects in Fleet (they may target any team's hosts), so they need a global
role: every global role reads them; global admins, maintainers and gitops write them. Users with
team roles only get 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated

from activities.api_hooks import AuditedViewSetMixin
from hosts.choices import Role
from hosts.models import Host, Label, Team
from hosts.permissions import ALL_ROLES, visible_team_ids
from packs.models import Pack, ScheduledQuery
from packs.serializers import PackSerializer, ScheduledQuerySerializer

PACK_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER, Role.GITOPS})


def may_read_packs(user: Any) -> bool:
    return visible_team_ids(user, ALL_ROLES) is None


def may_write_packs(user: Any) -> bool:
    return visible_team_ids(user, PACK_WRITE_ROLES) is None


class PackPermission(BasePermission):
    message = "Packs need a global Fleet role (admin, maintainer or gitops to change them)."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return may_read_packs(user) if request.method in SAFE_METHODS else may_write_packs(user)


@extend_schema_view(
    list=extend_schema(summary="List packs"),
    retrieve=extend_schema(summary="Get a pack"),
    create=extend_schema(summary="Create a pack", description="`targets` lists host, label and team ids."),
    update=extend_schema(summary="Replace a pack"),
    partial_update=extend_schema(summary="Change a pack (a target kind left out keeps its targets)"),
    destroy=extend_schema(summary="Delete a pack and its scheduled queries"),
)
class PackViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """Packs of scheduled queries and the hosts, labels and teams they reach."""

    serializer_class = PackSerializer
    permission_classes = [IsAuthenticated, PackPermission]
    filterset_fields = ["disabled"]
    search_fields = ["name", "description"]
    ordering_fields = ["id", "name", "created_at", "updated_at"]
    ordering = ["name"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Pack]:
        return Pack.objects.annotate(query_count=Count("scheduled")).prefetch_related(
            Prefetch("target_hosts", Host.objects.only("id")),
            Prefetch("target_labels", Label.objects.only("id")),
            Prefetch("target_teams", Team.objects.only("id")),
        )


_PACK_ID = OpenApiParameter("pack_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="The pack's id.")


@extend_schema_view(
    list=extend_schema(summary="List a pack's scheduled queries", parameters=[_PACK_ID]),
    retrieve=extend_schema(summary="Get a scheduled query", parameters=[_PACK_ID]),
    create=extend_schema(summary="Schedule a saved query in a pack", parameters=[_PACK_ID]),
    update=extend_schema(summary="Replace a scheduled query", parameters=[_PACK_ID]),
    partial_update=extend_schema(summary="Change a scheduled query", parameters=[_PACK_ID]),
    destroy=extend_schema(summary="Remove a query from a pack", parameters=[_PACK_ID]),
)
class ScheduledQueryViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """The saved queries a pack runs, with osquery's schedule options."""

    serializer_class = ScheduledQuerySerializer
    permission_classes = [IsAuthenticated, PackPermission]
    search_fields = ["name", "query__name"]
    ordering_fields = ["id", "name", "interval"]
    ordering = ["name"]
    lookup_value_regex = r"\d+"

    def pack(self) -> Pack:
        if not hasattr(self, "_pack"):
            self._pack = get_object_or_404(Pack, pk=self.kwargs["pack_pk"])
        return self._pack

    def get_queryset(self) -> QuerySet[ScheduledQuery]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no pack in the URL
            return ScheduledQuery.objects.none()
        return ScheduledQuery.objects.filter(pack=self.pack()).select_related("query")

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False) and "pack_pk" in self.kwargs:
            context["pack"] = self.pack()
        return context


def register(router: Any) -> None:
    """Mount this app's viewsets on the REST router (called from ``fleet.api_urls``)."""
    router.register("packs", PackViewSet, basename="pack")
    router.register(r"packs/(?P<pack_pk>\d+)/scheduled", ScheduledQueryViewSet, basename="pack-scheduled")
