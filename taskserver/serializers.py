"""REST shapes of tasks, agents, agent keys and destinations.

These check only the shape of the input (types, required fields); the rules (plugin schemas,
intervals, routes, unique names, team scope) are :mod:`taskserver.services`', so the console and
commands give the same messages. Secret values are write-only: what comes back shows
``"<secret>"`` in their place.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from taskserver import sealed
from taskserver.models import AgentKey, DestinationKind, MetricDestination, RouteType, Task, TaskAgent

MAX_ID = 2**63 - 1


def team_id_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_ID,
        help_text="The team; null or 0: global.",
    )


@extend_schema_field({"type": "object", "additionalProperties": True})
class ObjectField(serializers.JSONField):
    """A JSON object (its keys are checked by the services)."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected an object.")
        return value


# Wrapped in oneOf so that the schema keeps it inline: scripts' ``kind`` already owns the
# ``KindEnum`` name, and a second choice set named ``kind`` would be a naming collision.
@extend_schema_field({"oneOf": [{"type": "string", "enum": DestinationKind.values}]})
class DestinationKindField(serializers.CharField):
    """The destination's kind (one of :class:`DestinationKind`)."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value not in DestinationKind.values:
            raise serializers.ValidationError(f'"{value}" is not a valid choice.')
        return value


class RouteSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=RouteType.choices)
    config = ObjectField(
        required=False,
        default=dict,
        help_text='any: {}; byTags: {"tags": [...]}; byIds: {"ids": [...]}; byLabels: {"labels": [...]}',
    )


class TaskSerializer(serializers.ModelSerializer):
    """A task as people see it: secret settings show ``"<secret>"``."""

    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    settings = serializers.SerializerMethodField()
    route = serializers.SerializerMethodField()
    assigned_agent_id = serializers.SerializerMethodField(
        help_text="For an any route: the agent running it (null: waiting for an agent to connect)."
    )

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "team_id",
            "plugin",
            "settings",
            "interval",
            "route",
            "enabled",
            "revision",
            "assigned_agent_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_settings(self, task: Task) -> dict[str, Any]:
        return sealed.masked(task.settings)

    @extend_schema_field(RouteSerializer)
    def get_route(self, task: Task) -> dict[str, Any]:
        return {"type": task.route_type, "config": task.route_config or {}}

    def get_assigned_agent_id(self, task: Task) -> int | None:
        if task.route_type != RouteType.ANY:
            return None
        assignment = getattr(task, "any_assignment", None)
        return assignment.agent_id if assignment is not None else None


class TaskWriteSerializer(serializers.Serializer):
    """A task to create or change (PUT: name, plugin, interval and route are required)."""

    name = serializers.CharField(max_length=255)
    plugin = serializers.CharField(max_length=128)
    settings = ObjectField(
        required=False,
        help_text='The plugin\'s settings. Secret ones are write-only: send "<secret>" or leave them out '
        "to keep the stored value.",
    )
    interval = serializers.IntegerField(help_text="Seconds between runs, 10 to 86400.")
    route = RouteSerializer()
    enabled = serializers.BooleanField(required=False)
    team_id = team_id_field()


class TaskAgentSerializer(serializers.ModelSerializer):
    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    host_id = serializers.IntegerField(read_only=True, allow_null=True)
    task_count = serializers.SerializerMethodField(help_text="Enabled tasks routed to this agent.")

    class Meta:
        model = TaskAgent
        fields = [
            "id",
            "name",
            "team_id",
            "tags",
            "host_id",
            "enabled",
            "online",
            "version",
            "created_at",
            "last_seen_at",
            "task_count",
        ]
        read_only_fields = fields

    def get_task_count(self, agent: TaskAgent) -> int:
        from taskserver.routing import tasks_for

        counts = self.context.get("task_counts")
        return counts[agent.pk] if counts and agent.pk in counts else len(tasks_for(agent))


class TaskAgentWriteSerializer(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(max_length=64, allow_blank=True), required=False)
    enabled = serializers.BooleanField(required=False)
    host_id = serializers.IntegerField(
        required=False, allow_null=True, help_text="The host the agent runs on (its team's); null unties it."
    )


class AgentKeySerializer(serializers.ModelSerializer):
    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = AgentKey
        fields = ["id", "name", "team_id", "created_by", "created_at", "last_used_at"]
        read_only_fields = fields

    def get_created_by(self, key: AgentKey) -> str | None:
        return key.created_by.get_username() if key.created_by_id and key.created_by else None


class AgentKeyCreatedSerializer(AgentKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself: shown this once, never again.")

    class Meta(AgentKeySerializer.Meta):
        fields = [*AgentKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class AgentKeyWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    team_id = team_id_field()


class MetricDestinationSerializer(serializers.ModelSerializer):
    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    kind = DestinationKindField(read_only=True)
    headers = serializers.SerializerMethodField(help_text='Header names; every value shows "<secret>".')

    class Meta:
        model = MetricDestination
        fields = ["id", "name", "team_id", "kind", "url", "headers", "enabled", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_headers(self, destination: MetricDestination) -> dict[str, str]:
        return {name: sealed.MARKER for name in destination.headers or {}}


class MetricDestinationWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    kind = DestinationKindField()
    url = serializers.CharField(max_length=2048, required=False, allow_blank=True)
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text='Write-only values; send "<secret>" to keep a stored one. '
        "Leaving headers out keeps them all.",
    )
    enabled = serializers.BooleanField(required=False)
    team_id = team_id_field()


# --- Metrics sent to the server (taskserver.metric_store) ---------------------------------------


class MetricsQuerySerializer(serializers.Serializer):
    since = serializers.CharField(
        required=False,
        help_text="Points from this time on: unix seconds or ISO 8601 (default and earliest: the retention).",
    )
    name = serializers.CharField(required=False, max_length=255, help_text="Only series of this metric name.")
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=500, default=100, help_text="Series at most (1 to 500)."
    )


class MetricSeriesSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    unit = serializers.CharField()
    type = serializers.ChoiceField(choices=["gauge", "counter", "rate"])
    tags = serializers.DictField(child=serializers.CharField(), help_text="Tags other than task and agent.")
    task_id = serializers.IntegerField(allow_null=True, help_text="Null: the agent's own metrics.")
    task = serializers.CharField(allow_null=True, help_text="The task's name.")
    agent_id = serializers.IntegerField()
    agent = serializers.CharField(help_text="The agent's name.")
    last_value = serializers.FloatField()
    last_at = serializers.DateTimeField()
    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="[unix seconds, value] pairs, oldest first.",
    )


class MetricsAnswerSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Series seen within the retention (before `limit`).")
    since = serializers.FloatField(help_text="Unix seconds: the points start here.")
    retention = serializers.IntegerField(help_text="Seconds points are kept.")
    series = MetricSeriesSerializer(many=True)
