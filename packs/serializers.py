"""REST representations of packs (with their targets) and of the queries they schedule.

Targets are lists of ids, ``{"hosts": [...], "labels": [...], "teams": [...]}``, checked in one
query per kind (a pack may target thousands of hosts). Writes go through ``packs.services``.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework import serializers

from hosts.models import Host, Label, Team
from hosts.serializers import run_service
from packs import services
from packs.models import Pack, ScheduledQuery
from queries.models import Query

_TARGET_KINDS: dict[str, tuple[type[models.Model], str]] = {
    "hosts": (Host, "target_hosts"),
    "labels": (Label, "target_labels"),
    "teams": (Team, "target_teams"),
}


class IdListField(serializers.ListField):
    """A list of ids of ``model``; unknown ids are a 400 naming them."""

    def __init__(self, model: type[models.Model], **kwargs: Any) -> None:
        self.model = model
        super().__init__(child=serializers.IntegerField(min_value=1), **kwargs)

    def to_internal_value(self, data: Any) -> list[int]:
        ids = sorted(set(super().to_internal_value(data)))
        found = set(self.model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise serializers.ValidationError(
                f"Unknown {self.model._meta.verbose_name} id(s): {', '.join(map(str, missing))}."
            )
        return ids


class PackTargetsSerializer(serializers.Serializer):
    hosts = IdListField(Host, required=False, help_text="Ids of hosts targeted directly.")
    labels = IdListField(Label, required=False, help_text="Ids of labels whose hosts are targeted.")
    teams = IdListField(Team, required=False, help_text="Ids of teams whose hosts are targeted.")

    def to_representation(self, pack: Pack) -> dict[str, list[int]]:
        # From the prefetched rows (``PackViewSet.get_queryset``): no query per pack.
        return {
            kind: sorted(t.pk for t in getattr(pack, attr).all()) for kind, (_, attr) in _TARGET_KINDS.items()
        }


class PackSerializer(serializers.ModelSerializer):
    targets = PackTargetsSerializer(source="*", required=False)
    query_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Pack
        fields = ["id", "name", "description", "platform", "disabled", "targets", "query_count",
                  "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}  # checked by packs.services (reserved names too)

    def _save(self, pack: Pack, data: dict[str, Any]) -> Pack:
        # ``targets`` (source="*") arrives flattened; a kind left out keeps its current targets.
        targets = {kind: data.pop(kind, None) for kind in _TARGET_KINDS}
        for name, value in data.items():
            setattr(pack, name, value)
        return run_service(
            lambda: services.save_pack(pack, **targets), conflict="A pack with this name already exists."
        )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        candidate = Pack(pk=self.instance.pk) if self.instance else Pack()
        for name in ("name", "description", "platform"):
            setattr(candidate, name, attrs.get(name, getattr(self.instance, name, "")))
        run_service(lambda: services.check_pack(candidate))
        for name in ("name", "description", "platform"):
            if name in attrs:
                attrs[name] = getattr(candidate, name)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Pack:
        return self._save(Pack(), dict(validated_data))

    def update(self, instance: Pack, validated_data: dict[str, Any]) -> Pack:
        return self._save(instance, dict(validated_data))

    def to_representation(self, pack: Pack) -> dict[str, Any]:
        data = super().to_representation(pack)
        if getattr(pack, "query_count", None) is None:
            data["query_count"] = pack.scheduled.count()
        return data


class ScheduledQuerySerializer(serializers.ModelSerializer):
    pack_id = serializers.IntegerField(read_only=True)
    query_id = serializers.PrimaryKeyRelatedField(
        source="query", queryset=Query.objects.all(), help_text="The saved query to run."
    )
    query_name = serializers.CharField(source="query.name", read_only=True)
    query = serializers.CharField(source="query.query", read_only=True, help_text="The query's SQL.")
    name = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="Name in the pack; the query's by default.",
    )

    class Meta:
        model = ScheduledQuery
        fields = ["id", "pack_id", "query_id", "query_name", "query", "name", "description", "interval",
                  "snapshot", "removed", "platform", "version", "shard", "denylist"]  # fmt: skip
        read_only_fields = ["id"]
        extra_kwargs = {"interval": {"help_text": "Seconds between runs (1-604800)."}}
        validators: list = []  # (pack, name) uniqueness: packs.services, with a readable message

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        candidate = ScheduledQuery(pk=self.instance.pk) if self.instance else ScheduledQuery()
        if self.instance:
            for f in ScheduledQuery._meta.concrete_fields:
                setattr(candidate, f.attname, getattr(self.instance, f.attname))
        candidate.pack_id = self.context["pack"].pk
        for name, value in attrs.items():
            setattr(candidate, name, value)
        run_service(lambda: services.check_scheduled(candidate))
        for name in ("name", "description", "interval", "platform", "version"):
            attrs[name] = getattr(candidate, name)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> ScheduledQuery:
        scheduled = ScheduledQuery(pack=self.context["pack"], **validated_data)
        return run_service(
            lambda: services.save_scheduled(scheduled), conflict="This name is taken in the pack."
        )

    def update(self, instance: ScheduledQuery, validated_data: dict[str, Any]) -> ScheduledQuery:
        for name, value in validated_data.items():
            setattr(instance, name, value)
        return run_service(
            lambda: services.save_scheduled(instance), conflict="This name is taken in the pack."
        )
