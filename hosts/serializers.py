"""REST representations of hosts, teams and enroll secrets, with Fleet's field names.

Writes go through ``hosts.services`` (the shared write path); its ``django.core.exceptions.
ValidationError`` is turned into DRF's so bad input answers 400 with the message, never 500.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts import services
from hosts.agent_options import validate_agent_options
from hosts.choices import HostStatus
from hosts.models import EnrollSecret, Host, HostSeenTime, Team
from hosts.permissions import SECRET_READ_ROLES, has_team_role
from hosts.status import status_of

T = TypeVar("T")


def drf_error(exc: DjangoValidationError) -> serializers.ValidationError:
    """The DRF equivalent of a Django ``ValidationError`` (field errors kept per field)."""
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError(exc.messages)


def run_service(call: Callable[[], T], conflict: str = "This conflicts with an existing object.") -> T:
    """Run a write, mapping validation errors and lost uniqueness races to 400s."""
    try:
        with transaction.atomic():  # a savepoint, so a failed write leaves the request usable
            return call()
    except DjangoValidationError as exc:
        raise drf_error(exc) from exc
    except IntegrityError as exc:  # a concurrent request won the unique check
        raise serializers.ValidationError(conflict) from exc


def _seen(host: Host) -> HostSeenTime | None:
    # Reverse one-to-one: select_related caches a missing row as "does not exist", no query.
    return getattr(host, "seen", None)


class DeviceStateField(serializers.ChoiceField):
    """Fleet's ``device_status`` / ``pending_action`` (lock, unlock, wipe), on one host's detail only.

    They come from the host's device-action runs (two indexed queries), so a list of hosts leaves
    them out rather than paying for them per row; the two fields share one lookup per host.
    """

    def __init__(self, choices: list[str], **kwargs: Any) -> None:
        super().__init__(choices=choices, read_only=True, **kwargs)

    def get_attribute(self, instance: Host) -> str:
        serializer = self.parent
        if serializer.parent is not None:  # a host inside a list
            raise serializers.SkipField
        cache = serializer.context.setdefault("device_states", {})
        if instance.pk not in cache:
            from hostscripts.device_status import device_status

            cache[instance.pk] = device_status(instance).as_fleet()
        return cache[instance.pk][self.field_name]


class HostSerializer(serializers.ModelSerializer):
    """A host as Fleet's ``GET /api/v1/fleet/hosts`` shows it (read-only: agents report hosts)."""

    display_name = serializers.CharField(read_only=True)
    device_status = DeviceStateField(
        ["unlocked", "locked", "wiped"], help_text="Host detail only: unlocked, locked or wiped."
    )
    pending_action = DeviceStateField(
        ["", "lock", "unlock", "wipe"], help_text="Host detail only: the lock, unlock or wipe still pending."
    )
    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    team_name = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    seen_time = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = [
            "id",
            "hostname",
            "display_name",
            "computer_name",
            "uuid",
            "platform",
            "platform_like",
            "os_version",
            "code_name",
            "build",
            "osquery_version",
            "orbit_version",
            "cpu_type",
            "cpu_brand",
            "cpu_physical_cores",
            "cpu_logical_cores",
            "memory",
            "hardware_vendor",
            "hardware_model",
            "hardware_version",
            "hardware_serial",
            "uptime",
            "primary_ip",
            "primary_mac",
            "public_ip",
            "distributed_interval",
            "config_tls_refresh",
            "logger_tls_period",
            "team_id",
            "team_name",
            "status",
            "seen_time",
            "created_at",
            "last_enrolled_at",
            "detail_updated_at",
            "refetch_requested",
            "device_status",
            "pending_action",
        ]
        read_only_fields = fields

    def _now(self) -> datetime:
        # One "now" for the whole page, so every host's status is judged at the same instant.
        if "now" not in self.context:
            self.context["now"] = timezone.now()
        return self.context["now"]

    def get_team_name(self, host: Host) -> str | None:
        return host.team.name if host.team_id else None

    @extend_schema_field(
        serializers.ChoiceField(choices=[HostStatus.ONLINE, HostStatus.OFFLINE, HostStatus.MISSING])
    )
    def get_status(self, host: Host) -> str:
        seen = _seen(host)
        return status_of(seen and seen.seen_time, seen and seen.offline_after, self._now())

    def get_seen_time(self, host: Host) -> datetime | None:
        seen = _seen(host)
        if seen is None:
            return None
        return serializers.DateTimeField().to_representation(seen.seen_time)


class AgentOptionsField(serializers.JSONField):
    """Agent options (JSON object), checked like the console checks them."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if value is not None:
            problems = validate_agent_options(value)
            if problems:
                raise serializers.ValidationError(problems)
        return value


class TeamSerializer(serializers.ModelSerializer):
    host_count = serializers.IntegerField(read_only=True, default=0)
    agent_options = AgentOptionsField(required=False, allow_null=True)

    class Meta:
        model = Team
        fields = ["id", "name", "description", "agent_options", "host_count", "created_at"]
        read_only_fields = ["id", "created_at"]
        # Uniqueness and reserved names are the service's job (one message everywhere).
        extra_kwargs = {"name": {"validators": []}}

    def validate_name(self, value: str) -> str:
        try:
            return services.validate_team_name(value, exclude_id=self.instance.pk if self.instance else None)
        except DjangoValidationError as exc:  # field-level: the messages, without the field name again
            raise serializers.ValidationError(exc.messages) from exc

    def create(self, validated_data: dict[str, Any]) -> Team:
        team = run_service(
            lambda: services.create_team(validated_data["name"], validated_data.get("description", ""))
        )
        if validated_data.get("agent_options") is not None:
            team.agent_options = validated_data["agent_options"]
            team.save(update_fields=["agent_options"])
        return team

    def update(self, instance: Team, validated_data: dict[str, Any]) -> Team:
        return run_service(
            lambda: super(TeamSerializer, self).update(instance, validated_data),
            conflict="A team with this name already exists.",
        )


class EnrollSecretSerializer(serializers.ModelSerializer):
    """An enroll secret; ``secret`` may be left out on create to get a random one."""

    secret = serializers.CharField(
        max_length=255,
        required=False,
        trim_whitespace=True,
        help_text="Left out on create: a random 24-character secret.",
    )
    team_id = serializers.PrimaryKeyRelatedField(
        source="team",
        queryset=Team.objects.all(),
        allow_null=True,
        required=False,
        help_text="The team hosts enrolling with this secret join; null for no team.",
    )
    team_name = serializers.SerializerMethodField()

    class Meta:
        model = EnrollSecret
        fields = ["id", "secret", "team_id", "team_name", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_team_name(self, secret: EnrollSecret) -> str | None:
        return secret.team.name if secret.team_id else None

    def to_representation(self, instance: EnrollSecret) -> dict[str, Any]:
        data = super().to_representation(instance)
        # Only the scope's admins and maintainers see a secret's value (a writer such as gitops
        # may set one, never read it back).
        request = self.context.get("request")
        if request is not None and not has_team_role(request.user, instance.team_id, SECRET_READ_ROLES):
            data.pop("secret", None)
        return data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        team = attrs.get("team", instance.team if instance else None)
        if "secret" in attrs or instance is None:
            value = attrs.get("secret") or services.generate_enroll_secret()
        else:
            value = instance.secret
        attrs["team"] = team
        attrs["secret"] = run_service(
            lambda: services.validate_enroll_secret(value, team, exclude_id=instance.pk if instance else None)
        )
        return attrs

    def create(self, validated_data: dict[str, Any]) -> EnrollSecret:
        return run_service(
            lambda: super(EnrollSecretSerializer, self).create(validated_data),
            conflict="This secret is already in use.",
        )

    def update(self, instance: EnrollSecret, validated_data: dict[str, Any]) -> EnrollSecret:
        return run_service(
            lambda: super(EnrollSecretSerializer, self).update(instance, validated_data),
            conflict="This secret is already in use.",
        )


class RefetchResultSerializer(serializers.Serializer):
    refetch_requested = serializers.BooleanField()
