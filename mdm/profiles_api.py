"""REST API for configuration profiles (Fleet's ``/api/latest/fleet/configuration_profiles``).

- ``GET|POST /api/v1/configuration-profiles/``: list (``?team_id=``, 0 for no team), upload (a
  multipart ``profile`` file, or JSON with ``mobileconfig`` in base64; ``team_id``; at most one
  of ``labels_include_all``, ``labels_include_any``, ``labels_exclude_any``, label names or ids);
- ``GET|DELETE .../<uuid>/``, ``GET .../<uuid>/download/`` (the ``.mobileconfig`` as uploaded),
  ``GET .../<uuid>/status/`` (hosts verified, verifying, pending, failed);
- ``POST .../batch/?team_id=``: the team ends up with exactly the profiles given (``dry_run=true``
  only checks);
- ``GET /api/v1/hosts/<id>/configuration-profiles/`` and
  ``POST .../<identifier or profile uuid>/resend/``.

Roles (:mod:`mdm.access`): host readers read the global profiles and their teams'; admins and
maintainers write their teams' (global ones for no team). A profile or host of another team is
404; a visible one the role may not change is 403. Refusals are ``{"message": ...}`` with 400
(invalid profile, bad input), 404 or 409 (an identifier or name the team already has).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.numbers import parse_id
from hosts.models import Host, Label, Team
from hosts.paginators import CappedLimitOffsetPagination
from hosts.permissions import HOST_READ_ROLES, scope_queryset, visible_team_ids
from hostscripts.api import HostReaderPermission
from mdm import access
from mdm.models import Profile
from mdm.profiles import reads, services
from mdm.profiles.validation import MAX_PROFILE_BYTES, ProfileError

MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
_MAX_BASE64 = (MAX_PROFILE_BYTES + 2) // 3 * 4 + 64  # the largest profile, encoded, and some slack
_ERRORS = {
    400: OpenApiResponse(description="Invalid profile or request: `message` (and `errors` per field)."),
    403: OpenApiResponse(description="Your role does not allow this."),
    404: OpenApiResponse(description="No such profile, team or host among those you may see."),
}
_WRITE_ERRORS = {
    **_ERRORS,
    409: OpenApiResponse(description="The team already has a profile with this identifier or name."),
}
_TEAM_ID = OpenApiParameter(
    "team_id", OpenApiTypes.INT, OpenApiParameter.QUERY, description="A team's id; 0 or absent: no team."
)
_HOST_ID = OpenApiParameter("host_id", OpenApiTypes.INT, OpenApiParameter.PATH)


class ProfileAPIError(APIException):
    """A refusal with its own status and message (``{"message": ...}``, as every API error)."""

    def __init__(self, message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> None:
        self.status_code = status_code
        super().__init__(detail=message)


def refused(exc: ProfileError) -> ProfileAPIError:
    return ProfileAPIError(exc.message, exc.status)


# --- serializers --------------------------------------------------------------------------------


class LabelRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ProfileSerializer(serializers.ModelSerializer):
    team_id = serializers.IntegerField(allow_null=True, read_only=True)
    team_name = serializers.SerializerMethodField()
    platform = serializers.SerializerMethodField()
    labels_include_all = LabelRefSerializer(many=True, read_only=True)
    labels_include_any = LabelRefSerializer(many=True, read_only=True)
    labels_exclude_any = LabelRefSerializer(many=True, read_only=True)

    class Meta:
        model = Profile
        fields = [
            "uuid",
            "name",
            "identifier",
            "platform",
            "team_id",
            "team_name",
            "checksum",
            "labels_include_all",
            "labels_include_any",
            "labels_exclude_any",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_team_name(self, profile: Profile) -> str | None:
        return profile.team.name if profile.team_id else None

    def get_platform(self, profile: Profile) -> str:
        return "darwin"


def _labels_field() -> serializers.ListField:
    """Label names or ids (a field instance per use: DRF binds each to one name)."""
    return serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, max_length=services.MAX_LABELS
    )


class ProfileUploadSerializer(serializers.Serializer):
    profile = serializers.FileField(required=False, help_text="The .mobileconfig (multipart).")
    mobileconfig = serializers.CharField(
        required=False, trim_whitespace=True, help_text="The .mobileconfig in base64 (JSON)."
    )
    team_id = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**63 - 1)
    labels_include_all = _labels_field()
    labels_include_any = _labels_field()
    labels_exclude_any = _labels_field()


class StatusSerializer(serializers.Serializer):
    verified = serializers.IntegerField()
    verifying = serializers.IntegerField()
    pending = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchItemSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    profile = serializers.CharField(help_text="The .mobileconfig in base64.")
    labels_include_all = _labels_field()
    labels_include_any = _labels_field()
    labels_exclude_any = _labels_field()


class BatchRequestSerializer(serializers.Serializer):
    profiles = BatchItemSerializer(many=True, max_length=1000)


class BatchResultSerializer(serializers.Serializer):
    team_id = serializers.IntegerField(allow_null=True)
    dry_run = serializers.BooleanField()
    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    deleted = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())


class HostProfileSerializer(serializers.Serializer):
    name = serializers.CharField()
    identifier = serializers.CharField()
    profile_uuid = serializers.CharField(allow_null=True)
    operation = serializers.CharField()
    status = serializers.CharField()
    detail = serializers.CharField()
    updated_at = serializers.DateTimeField(allow_null=True)
    retries = serializers.IntegerField()
    resends = serializers.IntegerField()


class ResentSerializer(HostProfileSerializer):
    command_uuid = serializers.CharField()


# --- input --------------------------------------------------------------------------------------


def _decode(value: str, what: str) -> bytes:
    if len(value) > _MAX_BASE64:
        raise ProfileAPIError(f"{what} is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB.")
    try:
        return base64.b64decode(re.sub(r"\s+", "", value), validate=True)
    except (binascii.Error, ValueError):
        raise ProfileAPIError(f"{what} is not valid base64.") from None


def _uploaded(upload: Any) -> bytes:
    if upload.size is not None and upload.size > MAX_PROFILE_BYTES:
        raise ProfileAPIError(f"The profile is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB.")
    return upload.read(MAX_PROFILE_BYTES + 1)


def _team_for_write(user: Any, team_id: int | None) -> Team | None:
    """The team to write to (0 and null: no team), checked against the caller's roles."""
    team = None
    if team_id:
        readable = visible_team_ids(user, HOST_READ_ROLES)
        team = Team.objects.filter(pk=team_id).first()
        if team is None or (readable is not None and team_id not in readable):
            raise ProfileAPIError(f"No team with id {team_id}.", status.HTTP_404_NOT_FOUND)
    if not access.may_manage_team(user, team):
        raise PermissionDenied("Your role does not allow changing configuration profiles here.")
    return team


def _query_team_id(request: Request) -> int | None:
    raw = request.query_params.get("team_id", "")
    if raw in ("", "0"):
        return None
    parsed = parse_id(raw)
    if parsed is None:
        raise ProfileAPIError("team_id must be a team's id (or 0 for no team).")
    return parsed


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def with_labels(profiles: QuerySet[Profile]) -> QuerySet[Profile]:
    labels = Label.objects.only("id", "name")
    return profiles.select_related("team").prefetch_related(
        *(Prefetch(f"labels_{mode}", queryset=labels) for mode in services.LABEL_MODES)
    )


# --- the profiles -------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List configuration profiles",
        description="The no-team profiles and your teams'; `?team_id=` narrows to one team (0: no team).",
        parameters=[_TEAM_ID],
    ),
    retrieve=extend_schema(summary="Get a configuration profile"),
    destroy=extend_schema(
        summary="Delete a configuration profile",
        description="Hosts that have it get a RemoveProfile command.",
        responses={204: None, **_ERRORS},
    ),
)
class ProfileViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Configuration profiles: no-team ones and each team's."""

    serializer_class = ProfileSerializer
    permission_classes = [IsAuthenticated, HostReaderPermission]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    pagination_class = CappedLimitOffsetPagination
    search_fields = ["name", "identifier"]
    ordering_fields = ["name", "identifier", "created_at", "updated_at"]
    ordering = ["name", "id"]
    lookup_field = "uuid"
    lookup_value_regex = r"[0-9A-Fa-f-]{1,64}"

    def get_queryset(self) -> QuerySet[Profile]:
        profiles = with_labels(Profile.objects.defer("mobileconfig"))
        profiles = access.readable_profiles(profiles, self.request.user)
        if self.action == "list" and "team_id" in self.request.query_params:
            raw = self.request.query_params["team_id"]
            team_id = parse_id(raw)
            if team_id is None:
                return profiles.none()
            profiles = (
                profiles.filter(team__isnull=True) if team_id == 0 else profiles.filter(team_id=team_id)
            )
        return profiles

    @extend_schema(
        summary="Upload a configuration profile",
        description=(
            "A multipart form with the file as `profile`, or JSON with `mobileconfig` (base64); "
            "`team_id` (0 or absent: no team); label names or ids in at most one of "
            "`labels_include_all`, `labels_include_any`, `labels_exclude_any`. The identifier and "
            "the name (PayloadDisplayName) must be new in the team."
        ),
        request={
            "multipart/form-data": ProfileUploadSerializer,
            "application/json": ProfileUploadSerializer,
        },
        responses={201: ProfileSerializer, **_WRITE_ERRORS},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ProfileUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = _team_for_write(request.user, data.get("team_id"))
        upload, encoded = data.get("profile"), data.get("mobileconfig")
        if (upload is None) == (not encoded):
            raise ProfileAPIError("Send the profile as a `profile` file or as `mobileconfig` (base64), once.")
        contents = _uploaded(upload) if upload is not None else _decode(encoded, "mobileconfig")
        try:
            profile = services.create_profile(
                team=team,
                data=contents,
                labels_include_all=data.get("labels_include_all", ()),
                labels_include_any=data.get("labels_include_any", ()),
                labels_exclude_any=data.get("labels_exclude_any", ()),
                user=request.user,
            )
        except ProfileError as exc:
            raise refused(exc) from None
        profile = with_labels(Profile.objects.filter(pk=profile.pk)).get()
        return Response(ProfileSerializer(profile).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Profile) -> None:
        if not access.may_manage_team(self.request.user, instance.team_id):
            raise PermissionDenied("Your role does not allow deleting this profile.")
        services.delete_profile(instance, user=self.request.user)

    @extend_schema(
        summary="Download a configuration profile",
        description="The .mobileconfig exactly as uploaded (signed ones stay signed).",
        responses={(200, MOBILECONFIG_TYPE): OpenApiTypes.BINARY, **_ERRORS},
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, uuid: str | None = None) -> HttpResponse:
        profile = self.get_object()
        contents = Profile.objects.filter(pk=profile.pk).values_list("mobileconfig", flat=True).get()
        return mobileconfig_response(profile, bytes(contents))

    @extend_schema(
        summary="A configuration profile's status across hosts",
        description="How many hosts have it verified, verifying, pending (removals included) or failed.",
        responses={200: StatusSerializer, **_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path="status", url_name="status")
    def status_summary(self, request: Request, uuid: str | None = None) -> Response:
        profile = self.get_object()
        return Response(StatusSerializer(reads.status_counts([profile.pk])[profile.pk]).data)

    @extend_schema(
        summary="Set a team's configuration profiles",
        description=(
            "Fleet's batch: the team (`?team_id=`, 0 or absent: no team) ends with exactly these "
            "profiles, matched by identifier: new ones are created, changed ones replaced, the others "
            "deleted. `?dry_run=true` only checks. All or nothing: an invalid profile refuses the batch."
        ),
        parameters=[
            _TEAM_ID,
            OpenApiParameter("dry_run", OpenApiTypes.BOOL, OpenApiParameter.QUERY),
        ],
        request=BatchRequestSerializer,
        responses={200: BatchResultSerializer, **_WRITE_ERRORS},
    )
    @action(detail=False, methods=["post"], parser_classes=[JSONParser])
    def batch(self, request: Request) -> Response:
        team = _team_for_write(request.user, _query_team_id(request))
        serializer = BatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        items = [
            services.BatchItem(
                name=item.get("name", ""),
                data=_decode(item["profile"], f"Profile {index}"),
                labels_include_all=item.get("labels_include_all", ()),
                labels_include_any=item.get("labels_include_any", ()),
                labels_exclude_any=item.get("labels_exclude_any", ()),
            )
            for index, item in enumerate(serializer.validated_data["profiles"], start=1)
        ]
        dry_run = _truthy(request.query_params.get("dry_run"))
        try:
            result = services.batch_set(team, items, user=request.user, dry_run=dry_run)
        except ProfileError as exc:
            raise refused(exc) from None
        body = {
            "team_id": team.pk if team else None,
            "dry_run": dry_run,
            "created": [p.identifier for p in result.created],
            "updated": [p.identifier for p in result.updated],
            "deleted": result.deleted,
            "unchanged": [p.identifier for p in result.unchanged],
        }
        return Response(BatchResultSerializer(body).data)


def mobileconfig_response(profile: Profile, contents: bytes) -> HttpResponse:
    """The profile as a download named after it (shared with the console)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", profile.name).strip("-.") or "profile"
    response = HttpResponse(contents, content_type=MOBILECONFIG_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{safe[:100]}.mobileconfig"'
    return response


# --- a host's profiles --------------------------------------------------------------------------


def _entry(entry: reads.HostProfileEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "identifier": entry.identifier,
        "profile_uuid": entry.profile_uuid,
        "operation": entry.operation,
        "status": entry.status,
        "detail": entry.detail,
        "updated_at": entry.updated_at,
        "retries": entry.retries,
        "resends": entry.resends,
    }


@extend_schema_view(
    list=extend_schema(
        summary="List a host's configuration profiles",
        description=(
            "Each profile on the host (or being removed from it) with its status and detail; those it "
            "should get but that are not queued yet show as pending."
        ),
        parameters=[_HOST_ID],
    )
)
class HostProfilesViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """``/hosts/<host_id>/configuration-profiles/`` (+ ``<identifier>/resend/``)."""

    serializer_class = HostProfileSerializer
    permission_classes = [IsAuthenticated, HostReaderPermission]
    pagination_class = LimitOffsetPagination
    filter_backends: list = []
    lookup_field = "key"
    lookup_value_regex = r"[^/]{1,255}"

    def host(self) -> Host:
        hosts = scope_queryset(Host.objects.select_related("team"), self.request.user, HOST_READ_ROLES)
        return get_object_or_404(hosts, pk=self.kwargs["host_id"])

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        entries = [_entry(e) for e in reads.host_entries(self.host())]
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(HostProfileSerializer(page, many=True).data)

    @extend_schema(
        summary="Resend a configuration profile to a host",
        description=(
            "Queues the profile's InstallProfile again (any unanswered earlier one is cancelled); its "
            "status goes back to pending. Named by identifier or by the profile's uuid."
        ),
        parameters=[_HOST_ID, OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=None,
        responses={
            202: ResentSerializer,
            409: OpenApiResponse(description="Being removed, or the host is not enrolled in MDM."),
            **_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def resend(self, request: Request, host_id: str, key: str) -> Response:
        host = self.host()
        if not access.may_manage_team(request.user, host.team_id):
            raise PermissionDenied("Your role does not allow resending profiles to this host.")
        try:
            row = services.resend(host, key, user=request.user)
        except ProfileError as exc:
            raise refused(exc) from None
        entry = next((e for e in reads.host_entries(host) if e.row_id == row.pk), None)
        body = {**(_entry(entry) if entry else {}), "command_uuid": row.command_uuid}
        return Response(ResentSerializer(body).data, status=status.HTTP_202_ACCEPTED)


def register(router: Any) -> None:
    """Mount the profiles API on the REST router (called from ``fleet.api_urls``)."""
    router.register(r"configuration-profiles", ProfileViewSet, basename="configuration-profile")
    router.register(
        r"hosts/(?P<host_id>\d+)/configuration-profiles",
        HostProfilesViewSet,
        basename="host-configuration-profile",
    )
