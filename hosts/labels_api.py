"""REST API for labels: ``/api/v1/labels/`` and ``/api/v1/labels/<id>/hosts/``.

Labels are global (Fleet's labels have no team). Everyone with a role reads them; global admins
and maintainers write them; builtin labels are read-only (403). ``host_count`` counts the members
the caller may see, in one correlated subquery per page (no N+1). Writes go through
``hosts.labels``, which checks the SQL and drops what depends on labels.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import filters, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from activities.api_hooks import AuditedViewSetMixin
from hosts import labels
from hosts.api import HostViewSet
from hosts.choices import Role
from hosts.filters import HostFilterSet
from hosts.models import Host, Label, LabelMembership, LabelMembershipType, LabelType
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import (
    ALL_ROLES,
    HOST_READ_ROLES,
    FleetRolePermission,
    has_any_role,
    has_team_role,
    visible_team_ids,
)
from hosts.serializers import HostSerializer, run_service

LABEL_WRITE_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER})


def with_label_host_counts(queryset: QuerySet[Label], user: Any) -> QuerySet[Label]:
    """Annotate ``host_count``: members in the teams the user may see hosts of."""
    members = LabelMembership.objects.filter(label=OuterRef("pk"))
    team_ids = visible_team_ids(user, HOST_READ_ROLES)
    if team_ids is not None:
        members = members.filter(host__team_id__in=team_ids)
    per_label = members.order_by().values("label").annotate(n=Count("*")).values("n")
    return queryset.annotate(host_count=Coalesce(Subquery(per_label, output_field=IntegerField()), 0))


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class HostIdentifierField(serializers.Field):
    """A host id (number) or a hostname, UUID or hardware serial (string)."""

    default_error_messages = {"invalid": "A host is an id, hostname, UUID or serial."}

    def to_internal_value(self, data: Any) -> int | str:
        if (
            isinstance(data, bool)
            or not isinstance(data, (int, str))
            or (isinstance(data, str) and not data.strip())
        ):
            self.fail("invalid")
        return data.strip() if isinstance(data, str) else data

    def to_representation(self, value: Any) -> Any:
        return value


class LabelSerializer(serializers.ModelSerializer):
    """A label as Fleet shows it; ``hosts`` (write-only) lists a manual label's members."""

    host_count = serializers.IntegerField(read_only=True, default=0)
    hosts = serializers.ListField(
        child=HostIdentifierField(),
        write_only=True,
        required=False,
        max_length=labels.MAX_MANUAL_HOSTS,
        help_text="Manual labels only: the members, by id, hostname, UUID or serial (replaces the list).",
    )
    author_id = serializers.IntegerField(read_only=True, allow_null=True)
    author_name = serializers.SerializerMethodField()

    class Meta:
        model = Label
        fields = [
            "id",
            "name",
            "description",
            "query",
            "platform",
            "label_type",
            "label_membership_type",
            "host_count",
            "hosts",
            "author_id",
            "author_name",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "label_type", "created_at", "updated_at"]
        # Uniqueness, reserved names and the SQL check are the engine's (one message everywhere).
        extra_kwargs = {"name": {"validators": []}, "query": {"required": False}}

    def get_author_name(self, label: Label) -> str | None:
        return label.author.get_username() if label.author_id else None

    def create(self, validated_data: dict[str, Any]) -> Label:
        author = self.context["request"].user
        return run_service(lambda: labels.create_label(author=author, **validated_data))

    def update(self, instance: Label, validated_data: dict[str, Any]) -> Label:
        return run_service(lambda: labels.update_label(instance, **validated_data))


class LabelFilterSet(django_filters.FilterSet):
    label_type = django_filters.ChoiceFilter(choices=LabelType.choices, help_text="builtin or regular.")
    label_membership_type = django_filters.ChoiceFilter(
        choices=LabelMembershipType.choices, help_text="dynamic (a query decides) or manual (a list)."
    )
    platform = django_filters.CharFilter(
        method="_platform", help_text="Labels run on this platform: restricted to it, or to none."
    )

    class Meta:
        model = Label
        fields = ["label_type", "label_membership_type", "platform"]

    def _platform(self, queryset: QuerySet[Label], name: str, value: str) -> QuerySet[Label]:
        value = value.strip().lower()
        listed = (
            Q(platform=value)
            | Q(platform__startswith=f"{value},")
            | Q(platform__endswith=f",{value}")
            | Q(platform__contains=f",{value},")
        )
        return queryset.filter(listed | Q(platform=""))


class LabelPermission(FleetRolePermission):
    """Reads: any role. Writes: a global admin or maintainer (labels are global objects)."""

    def has_object_permission(self, request: Request, view: Any, obj: Label) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return has_any_role(request.user, view.read_roles)
        return has_team_role(request.user, None, view.write_roles)


@extend_schema_view(
    list=extend_schema(summary="List labels", description="With `host_count`: the members you may see."),
    retrieve=extend_schema(summary="Get a label"),
    create=extend_schema(
        summary="Create a label",
        description="Dynamic: `query` (osquery SQL, checked) and optional `platform`. Manual: `hosts`.",
    ),
    partial_update=extend_schema(summary="Change a label", description="Builtin labels cannot change."),
    update=extend_schema(summary="Replace a label", description="Builtin labels cannot change."),
    destroy=extend_schema(summary="Delete a label", description="Builtin labels cannot be deleted."),
)
class LabelViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    """Groups of hosts: dynamic (an osquery query decides), manual (a list) and Fleet's builtins."""

    serializer_class = LabelSerializer
    permission_classes = [IsAuthenticated, LabelPermission]
    read_roles = ALL_ROLES
    write_roles = LABEL_WRITE_ROLES
    filterset_class = LabelFilterSet
    search_fields = ["name", "description"]
    ordering_fields = ["id", "name", "label_type", "host_count", "created_at", "updated_at"]
    ordering = ["label_type", "name"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Label]:
        return with_label_host_counts(Label.objects.select_related("author"), self.request.user)

    def _require_writer(self, label: Label | None = None) -> None:
        if not has_team_role(self.request.user, None, LABEL_WRITE_ROLES):
            raise PermissionDenied("Only global admins and maintainers can change labels.")
        if label is not None and label.label_type == LabelType.BUILTIN:
            raise PermissionDenied(
                f'"{label.name}" is a builtin label: Fleet maintains it; it cannot be changed.'
            )

    def _reload(self, serializer: LabelSerializer) -> None:
        # The response shows the counts as they are after the write.
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    # Roles and builtins are checked before the body, so a refused write is a 403 whatever it holds.
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self._require_writer()
        return super().create(request, *args, **kwargs)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self._require_writer(self.get_object())
        return super().update(request, *args, **kwargs)

    def perform_create(self, serializer: LabelSerializer) -> None:
        serializer.save()
        self._reload(serializer)

    def perform_update(self, serializer: LabelSerializer) -> None:
        serializer.save()
        self._reload(serializer)

    def perform_destroy(self, instance: Label) -> None:
        self._require_writer(instance)
        try:
            labels.delete_label(instance)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc

    @extend_schema(
        summary="List a label's hosts",
        description="The members you may see, paginated and filtered like `/api/v1/hosts/`.",
        responses=HostSerializer(many=True),
        parameters=[
            OpenApiParameter(
                "search", str, description="Hostname (any part), UUID or serial (exact), IP prefix."
            ),
            OpenApiParameter("team_id", int),
            OpenApiParameter("platform", str),
            OpenApiParameter("status", str),
        ],
    )
    @action(detail=True, methods=["get"], pagination_class=CappedLimitOffsetPagination, filterset_class=None)
    def hosts(self, request: Request, pk: str | None = None) -> Response:
        # Not ``get_object()``: its filters would read the host filters (search, platform) as label ones.
        label = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(request, label)
        if not has_any_role(request.user, HOST_READ_ROLES):
            raise PermissionDenied("Your Fleet role does not allow seeing hosts.")
        hosts = Host.objects.select_related("team", "seen").filter(label_memberships__label=label)
        team_ids = visible_team_ids(request.user, HOST_READ_ROLES)
        if team_ids is not None:
            hosts = hosts.filter(team_id__in=team_ids)
        host_filters = HostFilterSet(request.query_params, queryset=hosts, request=request)
        if not host_filters.is_valid():
            raise serializers.ValidationError(host_filters.errors)
        # The host list's own search (fields and semantics), so both lists answer alike.
        hosts = filters.SearchFilter().filter_queryset(request, host_filters.qs, HostViewSet).order_by("-id")
        page = self.paginate_queryset(hosts)
        return self.get_paginated_response(HostSerializer(page, many=True).data)


def register(router: Any) -> None:
    """Mount the label viewset on the REST router (called from ``fleet.api_urls``)."""
    router.register("labels", LabelViewSet, basename="label")
