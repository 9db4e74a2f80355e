"""REST API for scripts: the library, runs (async, sync, batch) and results.

``/api/v1/scripts/`` (the library), ``scripts/run/``, ``scripts/run/sync/``,
``scripts/run/batch/``, ``scripts/results/`` (+ ``<execution_id>/``, ``<execution_id>/cancel/``);
the host-centred routes and lock/unlock/wipe are in :mod:`hostscripts.host_api`. Fleet's API is
the model (``/api/latest/fleet/scripts/...``), with our URL style and error shape.

The rules live in :mod:`hostscripts.services` and :mod:`hostscripts.access`; this module maps
them to HTTP: a host or run the caller may not see is 404, a visible host their role may not act
on 403, the server-wide switch 403, a script the host cannot run 422, a bad request 400.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.held_requests import held_request
from hosts.models import Host, Team
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import HOST_READ_ROLES, FleetRolePermission, has_any_role, visible_team_ids
from hostscripts import access, library, services, targets
from hostscripts.filters import RunFilterSet, ScriptFilterSet
from hostscripts.models import Script, ScriptRun
from hostscripts.serializers import (
    BatchScriptRunAcceptedSerializer,
    BatchScriptRunRequestSerializer,
    ScriptDetailSerializer,
    ScriptResultSerializer,
    ScriptRunAcceptedSerializer,
    ScriptRunRequestSerializer,
    ScriptSerializer,
    ScriptWriteSerializer,
)

EXECUTION_ID_REGEX = r"[0-9A-Za-z-]{1,36}"
_ERRORS = {
    400: OpenApiResponse(description="Invalid request: `message`, and `errors` per field for bad input."),
    403: OpenApiResponse(
        description="Your role does not allow this, or scripts are disabled on this server."
    ),
    404: OpenApiResponse(description="No such host, script or run among those you may see."),
}


class ScriptAPIError(APIException):
    """A refusal with its own status and message (``{"message": ...}``, as every API error)."""

    def __init__(self, message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        self.status_code = status_code
        super().__init__(detail=message)


def refused(exc: services.ScriptError) -> ScriptAPIError:
    return ScriptAPIError(exc.message, exc.status)


class HostReaderPermission(BasePermission):
    """Host readers anywhere get in (others 403); objects are then scoped by the querysets."""

    message = "Your Fleet role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return has_any_role(request.user, HOST_READ_ROLES)


class ScriptPermission(FleetRolePermission):
    """Reads: any host reader (the queryset keeps to global scripts and their teams'); writes:
    admins and maintainers of the script's team, or global ones."""

    def has_object_permission(self, request: Request, view: Any, obj: Script) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return access.may_write_script(request.user, obj.team_id)


# --- The library -------------------------------------------------------------------------------


def _save(**kwargs: Any) -> Script:
    """``services.save_script`` with its refusals as 400 (the message) and a lost race as 409."""
    try:
        with transaction.atomic():
            return services.save_script(**kwargs)
    except DjangoValidationError as exc:
        raise ScriptAPIError(" ".join(exc.messages)) from None
    except IntegrityError:
        raise ScriptAPIError("A script with this name already exists.", status.HTTP_409_CONFLICT) from None


@extend_schema_view(
    list=extend_schema(summary="List saved scripts", description="The global scripts and your teams'."),
    retrieve=extend_schema(summary="Get a saved script (with its contents)"),
    create=extend_schema(
        summary="Save a script",
        description=(
            "JSON `{name, contents, team_id}`, or a multipart form with the file as `script` (its file "
            "name is the script's name) and `team_id`, as Fleet's `POST /scripts`. Names end in `.sh` "
            "(macOS, Linux) or `.ps1` (Windows) and are unique per team."
        ),
        request={"application/json": ScriptWriteSerializer, "multipart/form-data": ScriptWriteSerializer},
        responses={201: ScriptDetailSerializer, **_ERRORS},
    ),
    update=extend_schema(
        summary="Replace a script's name and contents",
        request=ScriptWriteSerializer,
        responses={200: ScriptDetailSerializer, **_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a script's name or contents",
        request=ScriptWriteSerializer,
        responses={200: ScriptDetailSerializer, **_ERRORS},
    ),
    destroy=extend_schema(summary="Delete a saved script (runs keep what they ran)"),
)
class ScriptViewSet(viewsets.ModelViewSet):
    """The script library: global scripts and each team's."""

    permission_classes = [IsAuthenticated, ScriptPermission]
    read_roles = access.SCRIPT_READ_ROLES
    write_roles = access.SCRIPT_WRITE_ROLES
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    pagination_class = CappedLimitOffsetPagination
    filterset_class = ScriptFilterSet
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at", "updated_at"]
    ordering = ["name", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Script]:
        scripts = Script.objects.select_related("team", "author")
        if self.action == "list":
            scripts = scripts.defer("contents")
        return access.readable_scripts(scripts, self.request.user)

    def get_serializer_class(self) -> type:
        if self.action == "list":
            return ScriptSerializer
        if self.action in ("create", "update", "partial_update"):
            return ScriptWriteSerializer
        return ScriptDetailSerializer

    def _input(self, request: Request) -> dict[str, Any]:
        serializer = ScriptWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        upload = data.pop("script", None)
        if upload is not None:
            if data.get("contents"):
                raise ScriptAPIError("Send the script as a file or as contents, not both.")
            try:
                data["contents"] = library.uploaded_text(upload)
            except DjangoValidationError as exc:
                raise ScriptAPIError(exc.messages[0]) from None
            if not data.get("name"):
                data["name"] = upload.name
        return data

    def _team_for_write(self, team_id: int | None) -> int | None:
        """The team id to save under (0 and null: global), checked against the caller's roles."""
        team_id = team_id or None
        if team_id is not None:
            readable = visible_team_ids(self.request.user)
            if not Team.objects.filter(pk=team_id).exists() or (
                readable is not None and team_id not in readable
            ):
                raise ScriptAPIError(f"No team with id {team_id}.")
        if not access.may_write_script(self.request.user, team_id):
            raise PermissionDenied(access.NOT_ALLOWED_TO_WRITE)
        return team_id

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._input(request)
        team_id = self._team_for_write(data.get("team_id"))
        script = _save(
            name=data.get("name", ""), contents=data.get("contents", ""), team_id=team_id, author=request.user
        )
        return Response(ScriptDetailSerializer(script).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        script = self.get_object()
        data = self._input(request)
        if "team_id" in data and (data["team_id"] or None) != script.team_id:
            raise ScriptAPIError("A script's team cannot be changed; save it in the other team instead.")
        partial = kwargs.get("partial", False)
        if not partial and not ("contents" in data and "name" in data):
            raise ScriptAPIError("Give both name and contents (or use PATCH to change one).")
        script = _save(
            name=data.get("name", script.name),
            contents=data.get("contents", script.contents),
            team_id=script.team_id,
            script=script,
        )
        return Response(ScriptDetailSerializer(script).data)

    def perform_destroy(self, instance: Script) -> None:
        library.delete_script(instance)


# --- Running -----------------------------------------------------------------------------------


def host_for_run(user: Any, host_id: int) -> Host:
    """The host to run on: 404 when the caller may not see it, 403 when their role may not act."""
    host = access.visible_hosts(user, Host.objects.select_related("team")).filter(pk=host_id).first()
    if host is None:
        raise NotFound(f"No host with id {host_id}.")
    if not access.may_run_on(user, host):
        raise PermissionDenied(access.NOT_ALLOWED_TO_RUN)
    return host


def chosen_script(user: Any, data: dict[str, Any]) -> Script | None:
    """The saved script named by ``script_id`` or ``script_name`` (+ ``team_id``), or ``None``."""
    scripts = access.readable_scripts(Script.objects.all(), user)
    if data.get("script_id"):
        script = scripts.filter(pk=data["script_id"]).first()
        if script is None:
            raise NotFound(f"No script with id {data['script_id']}.")
        return script
    if data.get("script_name"):
        team_id = data.get("team_id") or None
        script = scripts.filter(name=data["script_name"].strip(), team_id=team_id).first()
        if script is None:
            where = f"team {team_id}" if team_id else "the global library"
            raise NotFound(f"No script named {data['script_name']!r} in {where}.")
        return script
    return None


def _run_kwargs(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    script = chosen_script(user, data)
    return {"script": script} if script is not None else {"contents": data["script_contents"]}


def sync_wait_seconds(run: ScriptRun) -> float:
    """How long ``run/sync/`` holds the request: the run's timeout, at most ``SYNC_MAX_WAIT``."""
    return min(float(run.timeout), float(settings.SCRIPTS["SYNC_MAX_WAIT"]))


@extend_schema_view(
    create=extend_schema(
        summary="Run a script on a host",
        description=(
            "Queues the script and answers at once with its `execution_id` (202); the host runs it at "
            "its next orbit check-in. Give `script_id`, `script_contents`, or `script_name` with "
            "`team_id`."
        ),
        request=ScriptRunRequestSerializer,
        responses={
            202: ScriptRunAcceptedSerializer,
            422: OpenApiResponse(description="The host cannot run it."),
            **_ERRORS,
        },
    ),
)
class ScriptRunViewSet(viewsets.GenericViewSet):
    """``POST /scripts/run/`` and its synchronous and batch forms."""

    permission_classes = [IsAuthenticated, HostReaderPermission]
    serializer_class = ScriptRunRequestSerializer

    def create(self, request: Request) -> Response:
        serializer = ScriptRunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = self._queue(request, serializer.validated_data, sync=False)
        return Response(
            {"host_id": run.host_id, "execution_id": run.execution_id}, status=status.HTTP_202_ACCEPTED
        )

    def _queue(self, request: Request, data: dict[str, Any], *, sync: bool) -> ScriptRun:
        host = host_for_run(request.user, data["host_id"])
        try:
            return services.run_on_host(host, user=request.user, sync=sync, **_run_kwargs(request.user, data))
        except services.ScriptError as exc:
            raise refused(exc) from None

    @extend_schema(
        summary="Run a script on a host and wait for its result",
        description=(
            "Holds the request until the host reports, at most the host's script timeout and "
            "`SCRIPTS_SYNC_MAX_WAIT` seconds. Without an answer in time: 408 with the result so far, "
            "`host_timeout: true` and a message (the run stays queued)."
        ),
        request=ScriptRunRequestSerializer,
        responses={
            200: ScriptResultSerializer,
            408: ScriptResultSerializer,
            **_ERRORS,
            503: OpenApiResponse(
                description="Nothing queued: the server process already holds as many waiting requests "
                "as it may (`Retry-After` says when to try again)."
            ),
        },
    )
    @action(detail=False, methods=["post"])
    def sync(self, request: Request) -> Response:
        serializer = ScriptRunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with held_request():  # refused before the run is queued when this process holds enough
            run = self._queue(request, serializer.validated_data, sync=True)
            waited = sync_wait_seconds(run)
            run = services.wait_for_result(run, waited)
        if run.exit_code is None and not run.cancelled:
            body = ScriptResultSerializer(run, context={"timed_out_waiting": waited}).data
            return Response(body, status=status.HTTP_408_REQUEST_TIMEOUT)
        return Response(ScriptResultSerializer(run).data)

    @extend_schema(
        summary="Run a script on many hosts",
        description=(
            "The union of `host_ids`, the members of `label_ids` and the hosts of `team_id` (0: hosts "
            "without a team), among the hosts you may run scripts on, at most `SCRIPTS_MAX_HOSTS_PER_RUN`. "
            "Hosts that cannot run the script are skipped, grouped by reason."
        ),
        request=BatchScriptRunRequestSerializer,
        responses={202: BatchScriptRunAcceptedSerializer, **_ERRORS},
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        serializer = BatchScriptRunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        host_ids = data.get("host_ids") or []
        queryset = targets.target_queryset(
            host_ids=host_ids, label_ids=data.get("label_ids") or [], team_id=data.get("team_id")
        )
        try:
            chosen = targets.resolve(request.user, queryset, named_ids=host_ids)
            result = targets.queue_on_targets(chosen, user=request.user, **_run_kwargs(request.user, data))
        except services.ScriptError as exc:
            raise refused(exc) from None
        body = {
            "execution_ids": [run.execution_id for run in result.runs],
            "queued": len(result.runs),
            "skipped": [
                {"reason": reason, "host_ids": sorted(ids)} for reason, ids in result.skipped.items()
            ],
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


# --- Results -----------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List script runs",
        description="Runs on the hosts you may see, newest first (lock, unlock and wipe included).",
    ),
    retrieve=extend_schema(
        summary="Get a script's result",
        description=(
            "Fleet's result: `exit_code` null while pending, 0 ran, other error (-1: the host's "
            "timeout, -2: scripts disabled on the host), with `message` explaining it."
        ),
    ),
)
class ScriptResultViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs and their results, by execution id."""

    serializer_class = ScriptResultSerializer
    permission_classes = [IsAuthenticated, HostReaderPermission]
    pagination_class = CappedLimitOffsetPagination
    filterset_class = RunFilterSet
    ordering_fields = ["created_at", "finished_at"]
    ordering = ["-created_at", "-id"]
    lookup_field = "execution_id"
    lookup_value_regex = EXECUTION_ID_REGEX

    def get_queryset(self) -> QuerySet[ScriptRun]:
        runs = ScriptRun.objects.select_related("host")
        if self.action == "list":
            runs = runs.defer("contents")
        return access.visible_runs(runs, self.request.user)

    @extend_schema(
        summary="Cancel a pending run",
        request=None,
        responses={
            200: ScriptResultSerializer,
            409: OpenApiResponse(description="The run already has a result or was cancelled."),
            **_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, execution_id: str | None = None) -> Response:
        run = self.get_object()
        return Response(ScriptResultSerializer(cancel(request.user, run)).data)


def cancel(user: Any, run: ScriptRun) -> ScriptRun:
    """Cancel ``run`` for ``user`` (who may see it): 403 without the role, 409 when it finished."""
    if not access.may_run_on(user, run.host):
        raise PermissionDenied("Your role does not allow cancelling runs on this host.")
    if not services.cancel_run(run, user=user):
        run.refresh_from_db()
        what = "was already cancelled" if run.cancelled else "already has a result"
        raise ScriptAPIError(f"This run {what}; it cannot be cancelled.", status.HTTP_409_CONFLICT)
    return run


def register(router: Any) -> None:
    """Mount the scripts API on the REST router (called from ``fleet.api_urls``)."""
    from hostscripts import host_api

    router.register("scripts/run", ScriptRunViewSet, basename="script-run")
    router.register("scripts/results", ScriptResultViewSet, basename="script-result")
    router.register("scripts", ScriptViewSet, basename="script")
    host_api.register(router)
