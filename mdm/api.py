"""REST API for Apple MDM: its state and the APNs certificate, enrolled devices, and commands.

``/api/v1/mdm/apple/`` (state; ``apns/csr/`` and ``apns/`` for the push certificate, global
admins), ``/api/v1/mdm/apple/enrollment-profile/`` (the signed profile for a team),
``/api/v1/mdm/devices/`` (enrolled devices), ``/api/v1/mdm/commands/`` (list, send, one command
with the device's answer, ``pin/`` for a lock or erase PIN). Lock, unlock and wipe are the hosts'
own endpoints (``/api/v1/hosts/<id>/lock/`` ...), for Macs as for every host; configuration
profiles are in :mod:`mdm.profiles_api`.

Roles as :mod:`mdm.access` says; a host or command of another team is 404. No secret is ever in
an answer: no CA or push key, no PushMagic or push token, a PIN only through ``pin/`` (audited).
"""

from __future__ import annotations

import base64
import plistlib
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.models import Host, Team
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import HOST_READ_ROLES, scope_queryset
from hostscripts.api import HostReaderPermission
from mdm import access, commands, conf, push_certificate, queue, services
from mdm.models import Command, Enrollment

MAX_UPLOAD = 64 * 1024


class MdmAPIError(APIException):
    def __init__(self, message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        self.status_code = status_code
        super().__init__(detail=message)


def _refused(exc: services.MdmError) -> MdmAPIError:
    return MdmAPIError(exc.message, exc.status)


def plist_to_json(value: Any) -> Any:
    """A device's answer as JSON: data becomes base64, dates ISO 8601."""
    if isinstance(value, dict):
        return {str(k): plist_to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plist_to_json(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- State and the APNs certificate -------------------------------------------------------------


class PushCertificateSerializer(serializers.Serializer):
    topic = serializers.CharField()
    not_before = serializers.DateTimeField(allow_null=True)
    not_after = serializers.DateTimeField(allow_null=True)
    serial = serializers.CharField(source="serial_hex")
    sha256 = serializers.CharField(source="sha256_hex")
    stand_in = serializers.BooleanField(source="is_dev")
    uploaded_at = serializers.DateTimeField(allow_null=True)


class MdmStateSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    apns_certificate = PushCertificateSerializer(allow_null=True)
    apns_warning = serializers.CharField(allow_null=True)
    pending_csr = serializers.BooleanField()
    enrolled_devices = serializers.IntegerField()
    devices_with_push_failures = serializers.IntegerField()


def _state() -> dict[str, Any]:
    row = push_certificate.current()
    return {
        "configured": conf.configured(),
        "apns_certificate": row if row.certificate_pem else None,
        "apns_warning": push_certificate.warning(row),
        "pending_csr": bool(row.pending_csr_pem),
        "enrolled_devices": Enrollment.objects.filter(enrolled=True).count(),
        "devices_with_push_failures": Enrollment.objects.filter(enrolled=True, push_failures__gt=0).count(),
    }


class CsrRequestSerializer(serializers.Serializer):
    email = serializers.EmailField()
    organization = serializers.CharField(max_length=64, default="Fleet")


class MdmStateView(APIView):
    """``GET /api/v1/mdm/apple/``: what is set up (host readers)."""

    permission_classes = [IsAuthenticated, HostReaderPermission]

    @extend_schema(summary="Apple MDM state", responses={200: MdmStateSerializer})
    def get(self, request: Request) -> Response:
        return Response(MdmStateSerializer(_state()).data)


def _require_global_admin(request: Request) -> None:
    if not access.may_manage_push_certificate(request.user):
        raise PermissionDenied("Only global admins manage the APNs certificate.")


class ApnsCsrView(APIView):
    """``POST /api/v1/mdm/apple/apns/csr/``: a CSR to get the push certificate from Apple."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Make an APNs certificate request",
        request=CsrRequestSerializer,
        responses={200: OpenApiResponse(OpenApiTypes.STR, description="The CSR (PEM).")},
    )
    def post(self, request: Request) -> HttpResponse:
        _require_global_admin(request)
        form = CsrRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        csr = push_certificate.make_csr(form.validated_data["email"], form.validated_data["organization"])
        response = HttpResponse(csr, content_type="application/x-pem-file")
        response["Content-Disposition"] = 'attachment; filename="fleet-apns.csr"'
        return response


class ApnsUploadView(APIView):
    """``POST /api/v1/mdm/apple/apns/``: install the certificate Apple issued (multipart
    ``certificate``, or JSON ``{"certificate": "<PEM>"}``)."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        summary="Upload the APNs certificate", request=None, responses={201: PushCertificateSerializer}
    )
    def post(self, request: Request) -> Response:
        _require_global_admin(request)
        value = request.data.get("certificate")
        if hasattr(value, "read"):
            if value.size > MAX_UPLOAD:
                raise MdmAPIError("The certificate file is too large.")
            data = value.read()
        elif isinstance(value, str) and value.strip():
            data = value.encode()
        else:
            raise MdmAPIError("Send the certificate as `certificate` (a file or PEM text).")
        try:
            row = services.upload_push_certificate(data, user=request.user)
        except services.MdmError as exc:
            raise _refused(exc) from None
        return Response(PushCertificateSerializer(row).data, status=status.HTTP_201_CREATED)


class EnrollmentProfileView(APIView):
    """``GET /api/v1/mdm/apple/enrollment-profile/?team_id=``: the signed profile for a team."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Download the enrollment profile",
        parameters=[OpenApiParameter("team_id", int, description="Omit for hosts in no team.")],
        responses={200: OpenApiResponse(OpenApiTypes.BINARY, description="A signed .mobileconfig.")},
    )
    def get(self, request: Request) -> HttpResponse:
        team_id = request.query_params.get("team_id", "")
        team = None
        if team_id:
            if not team_id.isdigit():
                raise MdmAPIError("team_id must be a number.")
            team = Team.objects.filter(pk=int(team_id)).first()
            if team is None or not access.may_manage_team(request.user, team):
                raise NotFound("No such team.")
        elif not access.may_manage_team(request.user, None):
            raise PermissionDenied("Your role does not allow enrolling devices in no team.")
        from mdm.views import profile_response

        return profile_response(team, request._request)


# --- Devices ----------------------------------------------------------------------------------------


class EnrollmentSerializer(serializers.ModelSerializer):
    host_id = serializers.IntegerField(allow_null=True)
    team_id = serializers.IntegerField(source="host.team_id", allow_null=True, default=None)
    pending_commands = serializers.SerializerMethodField()

    class Meta:
        model = Enrollment
        fields = [
            "id",
            "udid",
            "serial_number",
            "host_id",
            "team_id",
            "device_name",
            "model",
            "model_name",
            "os_version",
            "enrolled",
            "enrolled_at",
            "checked_out_at",
            "last_seen_at",
            "last_push_at",
            "last_push_error",
            "push_failures",
            "pending_commands",
        ]

    def get_pending_commands(self, obj: Enrollment) -> int:
        return queue.pending_count(obj.pk)


@extend_schema_view(
    list=extend_schema(summary="List MDM devices", description="Devices of the hosts you may see."),
    retrieve=extend_schema(summary="Get one MDM device"),
)
class EnrollmentViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsAuthenticated, HostReaderPermission]
    serializer_class = EnrollmentSerializer
    pagination_class = CappedLimitOffsetPagination

    def get_queryset(self) -> QuerySet[Enrollment]:
        rows = Enrollment.objects.select_related("host").order_by("-id")
        rows = scope_queryset(rows, self.request.user, HOST_READ_ROLES, team_field="host__team_id")
        if self.request.query_params.get("push_failing") in ("1", "true"):
            rows = rows.filter(push_failures__gt=0)
        return rows


# --- Commands ---------------------------------------------------------------------------------------


class CommandSerializer(serializers.ModelSerializer):
    command_uuid = serializers.CharField(source="uuid")
    host_id = serializers.IntegerField(source="enrollment.host_id", allow_null=True)
    udid = serializers.CharField(source="enrollment.udid")
    state = serializers.CharField()
    status = serializers.CharField(
        help_text="Apple's last status: Acknowledged, Error, NotNow ... (empty: none)"
    )
    has_pin = serializers.SerializerMethodField()

    class Meta:
        model = Command
        fields = [
            "command_uuid",
            "host_id",
            "udid",
            "request_type",
            "state",
            "status",
            "priority",
            "raw",
            "requested_by_name",
            "created_at",
            "delivered_at",
            "delivery_count",
            "not_now_count",
            "result_at",
            "error_chain",
            "has_pin",
        ]

    def get_has_pin(self, obj: Command) -> bool:
        return bool(obj.sealed_pin)


class CommandDetailSerializer(CommandSerializer):
    result = serializers.SerializerMethodField(help_text="The device's last report, as JSON.")

    class Meta(CommandSerializer.Meta):
        fields = [*CommandSerializer.Meta.fields, "result"]

    def get_result(self, obj: Command) -> Any:
        report = queue.result_plist(obj)
        if report is None:
            return None
        for secret_key in ("PushMagic", "Token", "UnlockToken"):
            report.pop(secret_key, None)
        return plist_to_json(report)


class SendCommandSerializer(serializers.Serializer):
    host_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=500
    )
    request_type = serializers.CharField(required=False, allow_blank=True, max_length=64)
    raw = serializers.CharField(
        required=False,
        max_length=commands.MAX_RAW_COMMAND,
        help_text="Admins: a whole command plist (XML); RequestType and fields are sent as given.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("raw") and not attrs.get("request_type"):
            raise serializers.ValidationError("Give request_type, or raw (a command plist).")
        return attrs


class SentSerializer(serializers.Serializer):
    commands = CommandSerializer(many=True)
    skipped = serializers.DictField(child=serializers.CharField(), help_text="host id: why")


@extend_schema_view(
    list=extend_schema(
        summary="List MDM commands",
        parameters=[
            OpenApiParameter("host_id", int),
            OpenApiParameter("request_type", str),
            OpenApiParameter("state", str, enum=["pending", "not now", "acknowledged", "error", "cancelled"]),
        ],
    ),
    retrieve=extend_schema(summary="Get one command, with the device's answer"),
)
class CommandViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, HostReaderPermission]
    pagination_class = CappedLimitOffsetPagination
    lookup_field = "uuid"
    lookup_value_regex = r"[0-9A-Za-z._-]{1,64}"

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return CommandDetailSerializer if self.action == "retrieve" else CommandSerializer

    def get_queryset(self) -> QuerySet[Command]:
        rows = access.visible_commands(
            Command.objects.select_related("enrollment").defer("payload", "result"), self.request.user
        )
        if self.action == "retrieve":
            rows = rows.model.objects.filter(pk__in=rows.values("pk")).select_related("enrollment")
        params = self.request.query_params
        host_id = params.get("host_id", "")
        if host_id:
            if not host_id.isdigit():
                raise MdmAPIError("host_id must be a number.")
            rows = rows.filter(enrollment__host_id=int(host_id))
        if params.get("request_type"):
            rows = rows.filter(request_type=params["request_type"])
        state = params.get("state")
        if state:
            rows = _filter_state(rows, state)
        return rows.order_by("-created_at", "-id")

    @extend_schema(
        summary="Send a command to hosts",
        description=(
            "Named commands without arguments (DeviceInformation, InstalledApplicationList, ProfileList, "
            "RestartDevice), or `raw`, a whole command plist (global or team admins only; audited). Lock "
            "and erase are the hosts' lock and wipe actions; profiles are installed by the reconciler."
        ),
        request=SendCommandSerializer,
        responses={202: SentSerializer},
    )
    def create(self, request: Request) -> Response:
        form = SendCommandSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        visible = scope_queryset(Host.objects.all(), request.user, HOST_READ_ROLES)
        hosts = list(visible.filter(pk__in=data["host_ids"]))
        if len(hosts) != len(set(data["host_ids"])):
            raise NotFound("No such host among those you may see.")
        raw = data.get("raw")
        for host in hosts:
            allowed = access.may_send_raw if raw else access.may_command
            if not allowed(request.user, host.team_id):
                kind = "raw MDM commands" if raw else "MDM commands"
                raise PermissionDenied(f"Your role does not allow sending {kind} to host {host.pk}.")
        try:
            sent = services.send(hosts, data.get("request_type", ""), user=request.user, raw=raw)
        except services.MdmError as exc:
            raise _refused(exc) from None
        except commands.CommandError as exc:
            raise MdmAPIError(str(exc)) from None
        body = {"commands": sent.commands, "skipped": {str(k): v for k, v in sent.skipped.items()}}
        return Response(SentSerializer(body).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Reveal a lock or erase PIN",
        description="Admins of the host's team; recorded in the audit trail.",
        request=None,
        responses={200: OpenApiResponse(description='{"pin": "123456"}')},
    )
    @action(detail=True, methods=["get"])
    def pin(self, request: Request, uuid: str) -> Response:
        command = self.get_object()
        host = command.enrollment.host
        if not access.may_send_raw(request.user, host.team_id if host else None):
            raise PermissionDenied("Only admins may reveal a PIN.")
        try:
            return Response({"pin": services.reveal_pin(command, user=request.user)})
        except services.MdmError as exc:
            raise _refused(exc) from None


def _filter_state(rows: QuerySet[Command], state: str) -> QuerySet[Command]:
    filters = {
        "pending": {"status": "", "cancelled": False},
        "not now": {"status": "NotNow", "cancelled": False},
        "acknowledged": {"status": "Acknowledged"},
        "error": {"status__in": ("Error", "CommandFormatError")},
        "cancelled": {"cancelled": True, "status__in": ("", "NotNow")},
    }
    if state not in filters:
        raise MdmAPIError(f"state must be one of {', '.join(filters)}.")
    return rows.filter(**filters[state])


def register(router: Any) -> None:
    router.register(r"mdm/devices", EnrollmentViewSet, basename="mdm-device")
    router.register(r"mdm/commands", CommandViewSet, basename="mdm-command")


def plist_preview(command: Command) -> str:
    """The command as sent, for admins, with PINs and profile payloads elided."""
    try:
        body = plistlib.loads(bytes(command.payload))
    except Exception:
        return ""
    inner = body.get("Command", {})
    if "PIN" in inner:
        inner["PIN"] = "******"
    if isinstance(inner.get("Payload"), bytes):
        inner["Payload"] = f"<{len(inner['Payload'])} bytes>"
    return plistlib.dumps(body, fmt=plistlib.FMT_XML).decode()
