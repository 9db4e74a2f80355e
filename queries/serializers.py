"""REST representation of saved queries, with Fleet's field names.

Writes go through ``queries.services.save_query`` (the same checks as the console and specs): a
syntax error answers 400 with the parser's message under ``errors.query``; tables osquery lacks
on the query's platforms come back as ``warnings`` in the 201/200 response.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.models import Team
from hosts.serializers import run_service
from queries import services
from queries.models import Query


class QuerySerializer(serializers.ModelSerializer):
    team_id = serializers.PrimaryKeyRelatedField(
        source="team",
        queryset=Team.objects.all(),
        allow_null=True,
        required=False,
        help_text="The team the query belongs to; null for a global query.",
    )
    team_name = serializers.SerializerMethodField()
    author_id = serializers.IntegerField(read_only=True, allow_null=True)
    author_name = serializers.SerializerMethodField()
    scheduled = serializers.BooleanField(read_only=True, help_text="interval > 0: agents run it.")
    warnings = serializers.SerializerMethodField(
        help_text="Tables osquery does not have on the query's platforms (the query is saved anyway)."
    )

    class Meta:
        model = Query
        fields = [
            "id",
            "name",
            "description",
            "query",
            "team_id",
            "team_name",
            "platform",
            "min_osquery_version",
            "logging",
            "interval",
            "scheduled",
            "automations_enabled",
            "discard_data",
            "observer_can_run",
            "author_id",
            "author_name",
            "created_at",
            "updated_at",
            "warnings",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {
            "name": {"validators": []},  # uniqueness per team is the service's job (one message)
            "query": {"help_text": "osquery SQL (SQLite dialect), checked on save."},
        }

    def get_team_name(self, query: Query) -> str | None:
        return query.team.name if query.team_id else None

    def get_author_name(self, query: Query) -> str | None:
        return query.author.get_username() if query.author_id else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, query: Query) -> list[str]:
        return services.query_warnings(query)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Check the query as it would be saved (instance fields overlaid with the request's)."""
        candidate = Query(pk=self.instance.pk) if self.instance else Query()
        if self.instance:
            for f in Query._meta.concrete_fields:
                setattr(candidate, f.attname, getattr(self.instance, f.attname))
        for name, value in attrs.items():
            setattr(candidate, name, value)
        run_service(lambda: services.check_query(candidate))
        for name in ("name", "description", "query", "platform", "min_osquery_version", "interval"):
            if name in attrs:
                attrs[name] = getattr(candidate, name)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Query:
        query = Query(**validated_data)
        run_service(lambda: services.save_query(query), conflict="A query with this name already exists.")
        return query

    def update(self, instance: Query, validated_data: dict[str, Any]) -> Query:
        for name, value in validated_data.items():
            setattr(instance, name, value)
        run_service(lambda: services.save_query(instance), conflict="A query with this name already exists.")
        return instance
