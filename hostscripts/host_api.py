"""REST routes centred on one host: its runs, its queue, and lock, unlock and wipe.

Fleet's ``GET /hosts/<id>/scripts``, ``GET|DELETE /hosts/<id>/activities/upcoming[/<id>]`` and
``POST /hosts/<id>/lock|unlock|wipe``. A host the caller may not see is 404 on every route; the
writes (cancelling, device actions) need admin or maintainer on the host's team (403 otherwise).
Lock, unlock and wipe are not scripts in the sense of the server-wide switch: they work while
scripts are disabled, as in Fleet.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.models import Host
from hosts.paginators import CappedLimitOffsetPagination
from hostscripts import access, device_actions
from hostscripts.api import EXECUTION_ID_REGEX, HostReaderPermission, cancel, refused
from hostscripts.device_status import device_status
from hostscripts.models import ScriptKind, ScriptRun
from hostscripts.serializers import DeviceActionAcceptedSerializer, ScriptRunSerializer
from hostscripts.services import ScriptError
from mdm import actions as mdm_actions

_HOST_ID = OpenApiParameter("host_id", OpenApiTypes.INT, OpenApiParameter.PATH)
_DEVICE_ERRORS = {
    403: OpenApiResponse(description="Your role does not allow this on this host."),
    404: OpenApiResponse(description="No such host among those you may see."),
    409: OpenApiResponse(description="Refused now: a pending action, not locked, already wiped ..."),
}


class HostRoutesMixin:
    """The host of the URL, among those the caller may see (404 otherwise)."""

    kwargs: dict[str, Any]
    request: Request

    def host(self) -> Host:
        cached = getattr(self, "_host", None)
        if cached is None:
            hosts = access.visible_hosts(self.request.user, Host.objects.select_related("team"))
            cached = self._host = get_object_or_404(hosts, pk=self.kwargs["host_id"])
        return cached

    def runs(self) -> QuerySet[ScriptRun]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no URL kwargs
            return ScriptRun.objects.none()
        return ScriptRun.objects.filter(host=self.host()).select_related("host").defer("contents")


class RunPagination(CappedLimitOffsetPagination):
    default_limit = 20


@extend_schema_view(
    list=extend_schema(
        summary="List a host's script runs",
        description="Newest first, lock, unlock and wipe included (without the contents: see results).",
        parameters=[_HOST_ID],
    )
)
class HostScriptRunsViewSet(HostRoutesMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """``GET /hosts/<host_id>/scripts/``: what the console's host page polls while runs are pending."""

    serializer_class = ScriptRunSerializer
    permission_classes = [IsAuthenticated, HostReaderPermission]
    pagination_class = RunPagination
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[ScriptRun]:
        return self.runs().order_by("-created_at", "-id")


@extend_schema_view(
    list=extend_schema(
        summary="List a host's upcoming activities",
        description="Its pending runs in the order the host will run them (oldest first).",
        parameters=[_HOST_ID],
    ),
    destroy=extend_schema(
        summary="Cancel an upcoming activity",
        parameters=[_HOST_ID],
        responses={204: None, 409: OpenApiResponse(description="The run already has a result.")},
    ),
)
class HostUpcomingViewSet(
    HostRoutesMixin, mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """``/hosts/<host_id>/activities/upcoming/`` (+ ``<execution_id>/`` to cancel)."""

    serializer_class = ScriptRunSerializer
    permission_classes = [IsAuthenticated, HostReaderPermission]
    pagination_class = RunPagination
    filter_backends: list = []
    lookup_field = "execution_id"
    lookup_value_regex = EXECUTION_ID_REGEX

    def get_queryset(self) -> QuerySet[ScriptRun]:
        if self.action == "destroy":
            return self.runs()  # a finished run is a 409, not a 404
        return self.runs().filter(exit_code__isnull=True, cancelled=False).order_by("created_at", "id")

    def perform_destroy(self, instance: ScriptRun) -> None:
        cancel(self.request.user, instance)


@extend_schema(
    parameters=[_HOST_ID], request=None, responses={202: DeviceActionAcceptedSerializer, **_DEVICE_ERRORS}
)
class DeviceActionViewSet(HostRoutesMixin, viewsets.GenericViewSet):
    """``POST /hosts/<host_id>/lock/``, ``unlock/`` and ``wipe/``: Linux and Windows through orbit,
    Macs through MDM (an unlock answers with the PIN to type on the Mac)."""

    permission_classes = [IsAuthenticated, HostReaderPermission]
    serializer_class = DeviceActionAcceptedSerializer

    def _request(self, kind: str) -> Response:
        host = self.host()
        if not access.may_run_on(self.request.user, host):
            raise PermissionDenied("Your role does not allow locking, unlocking or wiping this host.")
        try:
            run = device_actions.request_action(host, kind, user=self.request.user)
        except ScriptError as exc:
            raise refused(exc) from None
        if isinstance(run, ScriptRun):
            body = {"execution_id": run.execution_id}
        else:  # a Mac, through MDM: the command, and for an unlock the PIN to type on the Mac
            body = {"command_uuid": run.uuid if run else ""}
            if kind == ScriptKind.UNLOCK and run is not None:
                body["unlock_pin"] = mdm_actions.pin_of(run)
        body.update(device_status(host).as_fleet())
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Lock a host", description="Queues the built-in lock script (see docs/scripts.md)."
    )
    @action(detail=False, methods=["post"])
    def lock(self, request: Request, host_id: str) -> Response:
        return self._request(ScriptKind.LOCK)

    @extend_schema(summary="Unlock a locked host")
    @action(detail=False, methods=["post"])
    def unlock(self, request: Request, host_id: str) -> Response:
        return self._request(ScriptKind.UNLOCK)

    @extend_schema(summary="Wipe a host", description="Irreversible: the host's disks are erased.")
    @action(detail=False, methods=["post"])
    def wipe(self, request: Request, host_id: str) -> Response:
        return self._request(ScriptKind.WIPE)


def register(router: Any) -> None:
    router.register(r"hosts/(?P<host_id>\d+)/scripts", HostScriptRunsViewSet, basename="host-scripts")
    router.register(
        r"hosts/(?P<host_id>\d+)/activities/upcoming", HostUpcomingViewSet, basename="host-upcoming"
    )
    router.register(r"hosts/(?P<host_id>\d+)", DeviceActionViewSet, basename="host-device-action")
