"""REST API for tasks: ``/api/v1/tasks/``, ``task-agents/``, ``agent-keys/``, ``metric-destinations/``.

Standard DRF answers with real statuses (the original answered most errors with HTTP 200 and an
error body, task-server.md §2): 400 with ``errors`` per field for bad input, 403 when the role
may not write, 404 for what the caller may not see (another team's objects), 409 for a name
already used in the scope. Writes go through :mod:`taskserver.services`; lists are paginated
with ``?limit=&offset=`` and carry ``count``. ``tasks/{id}/metrics/`` and
``task-agents/{id}/metrics/`` answer the metrics agents sent to the ``server`` destination, to
whoever may read the task or agent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.models import Team
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import FleetRolePermission, visible_team_ids
from taskserver import access, metric_store, services
from taskserver.filters import MetricDestinationFilterSet, TaskAgentFilterSet, TaskFilterSet
from taskserver.models import AgentKey, MetricDestination, Task, TaskAgent
from taskserver.serializers import (
    AgentKeyCreatedSerializer,
    AgentKeySerializer,
    AgentKeyWriteSerializer,
    MetricDestinationSerializer,
    MetricDestinationWriteSerializer,
    MetricsAnswerSerializer,
    MetricsQuerySerializer,
    TaskAgentSerializer,
    TaskAgentWriteSerializer,
    TaskSerializer,
    TaskWriteSerializer,
)

_ERRORS = {
    400: OpenApiResponse(description="Invalid request: `message`, and `errors` per field."),
    403: OpenApiResponse(description="Your role does not allow this."),
    404: OpenApiResponse(description="Not found among the objects you may see."),
}
_CONFLICT = {409: OpenApiResponse(description="The name is taken in this team (or globally).")}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The name is already taken."


def _run(call: Any, **kwargs: Any) -> Any:
    """A service call with its refusals as REST errors (400 per field, 409 for a taken name)."""
    try:
        return call(**kwargs)
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        raise DRFValidationError(detail) from None
    except services.NameTaken as exc:
        raise Conflict(exc.message) from None


class ScopedViewSetMixin:
    """Reads scoped to the caller's teams; writes checked against the object's team."""

    model: type
    read_roles: frozenset[str]
    write_roles: frozenset[str]
    request: Request

    def scoped(self, queryset: QuerySet) -> QuerySet:
        return access.visible(queryset, self.request.user, self.read_roles)

    def team_for_write(self, team_id: int | None) -> int | None:
        """The team a new object goes to (0 and null: global): 400 for a team the caller does not
        know, 403 when their role may not write there."""
        team_id = team_id or None
        if team_id is not None:
            known = visible_team_ids(self.request.user)
            if not Team.objects.filter(pk=team_id).exists() or (known is not None and team_id not in known):
                raise DRFValidationError({"team_id": [f"No team with id {team_id}."]})
        if not access.may_write(self.request.user, team_id, self.write_roles):
            raise PermissionDenied("Your role does not allow this here.")
        return team_id

    def check_team_unchanged(self, data: dict[str, Any], obj: Any) -> None:
        if "team_id" in data and (data["team_id"] or None) != obj.team_id:
            raise DRFValidationError(
                {"team_id": ["The team cannot be changed; create it in the other team."]}
            )


def _since(text: str | None) -> datetime | None:
    """``?since=``: unix seconds or ISO 8601 (a time without a zone is UTC)."""
    if not text:
        return None
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    moment = parse_datetime(text)
    if moment is None:
        raise DRFValidationError({"since": ["Unix seconds or an ISO 8601 time."]})
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class MetricsActionMixin:
    """``{id}/metrics/``: the object's series with their latest value and points (``server``
    destination, :mod:`taskserver.metric_store`), for whoever may read the object."""

    metrics_of: str  # "task" or "agent"
    request: Request

    @extend_schema(
        summary="Metrics sent to the server",
        description="Series seen within the retention (`TASKSERVER_METRICS_RETENTION`), most recently "
        "updated first, each with its latest value and its points since `since`.",
        parameters=[MetricsQuerySerializer],
        responses={200: MetricsAnswerSerializer, **_ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        # Not get_object(): the list's filters would read ``name`` and ``limit`` as theirs.
        obj = get_object_or_404(self.get_queryset(), pk=pk)  # type: ignore[attr-defined]
        self.check_object_permissions(request, obj)  # type: ignore[attr-defined]
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        since = max(_since(query.validated_data.get("since")) or metric_store.cutoff(), metric_store.cutoff())
        series, total = metric_store.series_of(
            **{f"{self.metrics_of}_id": obj.pk},
            name=query.validated_data.get("name"),
            limit=query.validated_data["limit"],
        )
        points = metric_store.points_of([one.pk for one in series], since)
        answer = {
            "count": total,
            "since": since.timestamp(),
            "retention": int(metric_store.retention()),
            "series": [
                {
                    "id": one.pk,
                    "name": one.name,
                    "unit": one.unit,
                    "type": one.type,
                    "tags": one.tags,
                    "task_id": one.task_id,
                    "task": one.task.name if one.task_id else None,
                    "agent_id": one.agent_id,
                    "agent": one.agent.name,
                    "last_value": one.last_value,
                    "last_at": one.last_at,
                    "points": [list(point) for point in points[one.pk]],
                }
                for one in series
            ],
        }
        return Response(MetricsAnswerSerializer(answer).data)


# --- Tasks ---------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List tasks"),
    retrieve=extend_schema(summary="Get a task"),
    create=extend_schema(
        summary="Create a task",
        request=TaskWriteSerializer,
        responses={201: TaskSerializer, **_ERRORS, **_CONFLICT},
    ),
    update=extend_schema(
        summary="Replace a task",
        request=TaskWriteSerializer,
        responses={200: TaskSerializer, **_ERRORS, **_CONFLICT},
    ),
    partial_update=extend_schema(
        summary="Change some of a task's fields",
        request=TaskWriteSerializer,
        responses={200: TaskSerializer, **_ERRORS, **_CONFLICT},
    ),
    destroy=extend_schema(summary="Delete a task (its agents are told to drop it)"),
)
class TaskViewSet(MetricsActionMixin, ScopedViewSetMixin, viewsets.ModelViewSet):
    """Tasks: a plugin, its settings, an interval and a route to agents."""

    metrics_of = "task"
    serializer_class = TaskSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = access.TASK_READ_ROLES
    write_roles = access.TASK_WRITE_ROLES
    pagination_class = CappedLimitOffsetPagination
    filterset_class = TaskFilterSet
    search_fields = ["name"]
    ordering_fields = ["id", "name", "plugin", "interval", "created_at", "updated_at"]
    ordering = ["name", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Task]:
        return self.scoped(Task.objects.select_related("any_assignment"))

    def get_serializer_class(self) -> type:
        if self.action in ("create", "update", "partial_update"):
            return TaskWriteSerializer
        return TaskSerializer

    def _input(self, partial: bool) -> dict[str, Any]:
        serializer = TaskWriteSerializer(data=self.request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        route = data.pop("route", None)
        if route is not None:
            data["route_type"], data["route_config"] = route["type"], route.get("config") or {}
        return data

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._input(partial=False)
        data["team_id"] = self.team_for_write(data.get("team_id"))
        task = _run(services.save_task, user=request.user, **data)
        return Response(TaskSerializer(self._reload(task)).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        task = self.get_object()
        data = self._input(partial=kwargs.get("partial", False))
        self.check_team_unchanged(data, task)
        data.pop("team_id", None)
        task = _run(services.save_task, task=task, user=request.user, **data)
        return Response(TaskSerializer(self._reload(task)).data)

    def perform_destroy(self, instance: Task) -> None:
        services.delete_task(instance)

    @staticmethod
    def _reload(task: Task) -> Task:
        return Task.objects.select_related("any_assignment").get(pk=task.pk)


# --- Agents --------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List task agents"),
    retrieve=extend_schema(summary="Get a task agent"),
    update=extend_schema(
        summary="Set an agent's tags and switch",
        request=TaskAgentWriteSerializer,
        responses={200: TaskAgentSerializer, **_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change an agent's tags or switch",
        request=TaskAgentWriteSerializer,
        responses={200: TaskAgentSerializer, **_ERRORS},
    ),
    destroy=extend_schema(summary="Delete an agent (its any tasks move to other agents)"),
)
class TaskAgentViewSet(
    MetricsActionMixin,
    ScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Agents appear when they first connect with an agent key; here they are tagged, switched
    off or deleted."""

    metrics_of = "agent"
    serializer_class = TaskAgentSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = access.AGENT_READ_ROLES
    write_roles = access.AGENT_WRITE_ROLES
    pagination_class = CappedLimitOffsetPagination
    filterset_class = TaskAgentFilterSet
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at", "last_seen_at"]
    ordering = ["name", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[TaskAgent]:
        return self.scoped(TaskAgent.objects.all())

    def get_serializer_class(self) -> type:
        if self.action in ("update", "partial_update"):
            return TaskAgentWriteSerializer
        return TaskAgentSerializer

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        agent = self.get_object()
        serializer = TaskAgentWriteSerializer(data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        agent = _run(services.update_agent, agent=agent, **serializer.validated_data)
        return Response(TaskAgentSerializer(agent).data)

    def perform_destroy(self, instance: TaskAgent) -> None:
        services.delete_agent(instance)


# --- Agent keys ----------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List agent keys (never the keys themselves)"),
    retrieve=extend_schema(summary="Get an agent key's details"),
    create=extend_schema(
        summary="Create an agent key",
        description="The answer holds the key, this once: the server keeps only its digest.",
        request=AgentKeyWriteSerializer,
        responses={201: AgentKeyCreatedSerializer, **_ERRORS, **_CONFLICT},
    ),
    destroy=extend_schema(summary="Delete an agent key (agents using it can no longer connect)"),
)
class AgentKeyViewSet(
    ScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = AgentKeySerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = access.KEY_READ_ROLES
    write_roles = access.KEY_WRITE_ROLES
    pagination_class = CappedLimitOffsetPagination
    ordering_fields = ["id", "name", "created_at", "last_used_at"]
    ordering = ["name", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[AgentKey]:
        return self.scoped(AgentKey.objects.select_related("created_by"))

    def get_serializer_class(self) -> type:
        return AgentKeyWriteSerializer if self.action == "create" else AgentKeySerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = AgentKeyWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team_id = self.team_for_write(serializer.validated_data.get("team_id"))
        key, raw = _run(
            services.create_agent_key,
            name=serializer.validated_data["name"],
            team_id=team_id,
            user=request.user,
        )
        key.key = raw  # type: ignore[attr-defined]
        return Response(AgentKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: AgentKey) -> None:
        services.delete_agent_key(instance)


# --- Metric destinations -------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List metric destinations"),
    retrieve=extend_schema(summary="Get a metric destination"),
    create=extend_schema(
        summary="Add a metric destination",
        request=MetricDestinationWriteSerializer,
        responses={201: MetricDestinationSerializer, **_ERRORS, **_CONFLICT},
    ),
    update=extend_schema(
        summary="Replace a metric destination",
        request=MetricDestinationWriteSerializer,
        responses={200: MetricDestinationSerializer, **_ERRORS, **_CONFLICT},
    ),
    partial_update=extend_schema(
        summary="Change a metric destination",
        request=MetricDestinationWriteSerializer,
        responses={200: MetricDestinationSerializer, **_ERRORS, **_CONFLICT},
    ),
    destroy=extend_schema(summary="Delete a metric destination"),
)
class MetricDestinationViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    serializer_class = MetricDestinationSerializer
    permission_classes = [IsAuthenticated, FleetRolePermission]
    read_roles = access.DESTINATION_READ_ROLES
    write_roles = access.DESTINATION_WRITE_ROLES
    pagination_class = CappedLimitOffsetPagination
    filterset_class = MetricDestinationFilterSet
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["name", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[MetricDestination]:
        return self.scoped(MetricDestination.objects.all())

    def get_serializer_class(self) -> type:
        if self.action in ("create", "update", "partial_update"):
            return MetricDestinationWriteSerializer
        return MetricDestinationSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = MetricDestinationWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data["team_id"] = self.team_for_write(data.get("team_id"))
        destination = _run(services.save_destination, **data)
        return Response(MetricDestinationSerializer(destination).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        destination = self.get_object()
        serializer = MetricDestinationWriteSerializer(data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        self.check_team_unchanged(data, destination)
        data.pop("team_id", None)
        destination = _run(services.save_destination, destination=destination, **data)
        return Response(MetricDestinationSerializer(destination).data)

    def perform_destroy(self, instance: MetricDestination) -> None:
        services.delete_destination(instance)


def register(router: Any) -> None:
    """Mount the task API on the REST router (called from ``fleet.api_urls``)."""
    router.register("tasks", TaskViewSet, basename="task")
    router.register("task-agents", TaskAgentViewSet, basename="task-agent")
    router.register("agent-keys", AgentKeyViewSet, basename="agent-key")
    router.register("metric-destinations", MetricDestinationViewSet, basename="metric-destination")
