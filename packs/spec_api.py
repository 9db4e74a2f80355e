"""``POST /api/v1/spec/``: apply Fleet YAML specs over REST (what ``fleetctl apply`` posts).

The body is the YAML text itself (``Content-Type: application/yaml`` or ``text/yaml``) or JSON
``{"specs": [{apiVersion, kind, spec}, ...]}``. ``?dry_run=true`` returns the plan and changes
nothing; otherwise the plan is applied in one transaction and returned. Any document with an
error is a 400 listing every problem, and nothing is applied. Specs reach every team and the
global settings, so only global admins and the global gitops role may post them.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.choices import Role
from hosts.permissions import visible_team_ids
from packs.spec import SpecError, SpecSyntaxError, apply_documents, from_objects, parse_yaml
from packs.spec.plan import ACTIONS

SPEC_ROLES = frozenset({Role.ADMIN, Role.GITOPS})
DEFAULT_MAX_BYTES = 5 << 20


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The specs are too large."


def _read(stream: Any) -> bytes:
    limit = getattr(settings, "SPEC_MAX_BYTES", DEFAULT_MAX_BYTES)
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise PayloadTooLarge(f"The specs are larger than {limit} bytes.")
    return body


def _text(body: bytes, parser_context: dict[str, Any] | None) -> str:
    encoding = (parser_context or {}).get("encoding") or "utf-8"  # the charset, if the client gave one
    try:
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise ParseError(f"The body is not {encoding} text.") from None


class YAMLTextParser(BaseParser):
    """Hands the YAML over as text: ``packs.spec`` parses it, and reports errors per document."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> str:
        return _text(_read(stream), parser_context)


class TextYAMLParser(YAMLTextParser):
    media_type = "text/yaml"


class LegacyYAMLParser(YAMLTextParser):
    media_type = "application/x-yaml"


class SpecJSONParser(BaseParser):
    """JSON with the same size limit as YAML (DRF's own parser would read any size)."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return json.loads(_text(_read(stream), parser_context))
        except json.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error: {exc}.") from None


class SpecWriterPermission(BasePermission):
    message = "Applying specs needs the global admin or gitops role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return visible_team_ids(request.user, SPEC_ROLES) is None


class SpecDocumentSerializer(serializers.Serializer):
    apiVersion = serializers.CharField(help_text="v1")  # noqa: N815 - Fleet's key
    kind = serializers.CharField(
        help_text="query, report, label, pack, team, enroll_secret, config, task or metric_destination"
    )
    spec = serializers.DictField()


class SpecsRequestSerializer(serializers.Serializer):
    specs = SpecDocumentSerializer(many=True)


class ChangeSerializer(serializers.Serializer):
    kind = serializers.CharField()
    name = serializers.CharField()
    action = serializers.ChoiceField(choices=ACTIONS)
    source = serializers.CharField(help_text="Where the document is: source and document number.")
    fields = serializers.DictField(required=False, help_text='Changed fields: {"old": ..., "new": ...}.')
    notes = serializers.ListField(child=serializers.CharField(), required=False)


class SkippedSerializer(serializers.Serializer):
    kind = serializers.CharField()
    name = serializers.CharField()
    source = serializers.CharField()
    reason = serializers.CharField()


class PlanSummarySerializer(serializers.Serializer):
    create = serializers.IntegerField()
    update = serializers.IntegerField()
    delete = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    skipped = serializers.IntegerField()


class PlanSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    applied = serializers.BooleanField()
    summary = PlanSummarySerializer()
    changes = ChangeSerializer(many=True)
    skipped = SkippedSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())


class SpecErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    errors = serializers.DictField(required=False, help_text='{"specs": [one message per problem]}')


def _flag(value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "0", "false", "no"):
        return False
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    raise ValidationError({"dry_run": ["Use true or false."]})


def _error(message: str, errors: list[str]) -> Response:
    return Response({"message": message, "errors": {"specs": errors}}, status=status.HTTP_400_BAD_REQUEST)


class SpecView(APIView):
    permission_classes = [IsAuthenticated, SpecWriterPermission]
    parser_classes = [SpecJSONParser, YAMLTextParser, TextYAMLParser, LegacyYAMLParser]

    @extend_schema(
        summary="Apply Fleet YAML specs",
        description=(
            "Creates or updates queries (`kind: query` or `report`), labels, packs, teams, enroll "
            "secrets, the global agent options (`kind: config`), tasks and metric destinations by "
            "name, in one transaction. "
            "Kinds this server does not support yet (such as `policy`) are listed under `skipped`. "
            "Any error in any document is a 400 listing them all, and nothing is applied. "
            "Global admins and the global gitops role only."
        ),
        parameters=[
            OpenApiParameter("dry_run", OpenApiTypes.BOOL, description="Return the plan; change nothing.")
        ],
        request={
            "application/yaml": OpenApiTypes.STR,
            "text/yaml": OpenApiTypes.STR,
            "application/json": SpecsRequestSerializer,
        },
        responses={
            200: PlanSerializer,
            400: SpecErrorSerializer,
            403: SpecErrorSerializer,
            413: SpecErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        dry_run = _flag(request.query_params.get("dry_run"))
        data = request.data
        try:
            if isinstance(data, str):
                documents = parse_yaml(data, "request body")
            elif isinstance(data, dict) and isinstance(data.get("specs"), list):
                documents = from_objects(data["specs"], "specs")
            else:
                return _error('Send YAML (application/yaml) or JSON {"specs": [...]}.', [])
        except SpecSyntaxError as exc:
            return _error("The specs cannot be read; nothing was applied.", [str(exc)])
        if not documents:
            return _error("There are no spec documents to apply.", [])
        try:
            plan = apply_documents(documents, dry_run=dry_run, user=request.user)
        except SpecError as exc:
            return _error(f"{len(exc.errors)} problem(s) in the specs; nothing was applied.", exc.errors)
        return Response({"dry_run": dry_run, **plan.as_dict()})
