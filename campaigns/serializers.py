"""REST representations of campaigns and their per-host results.

Validation of what matters (SQL, targets, roles) stays in ``campaigns.services`` so REST, the
console and ``manage.py live_query`` refuse the same input with the same message. The request
serializers here only check shapes (and describe them in the OpenAPI schema); the targets are
passed through untouched so the campaign records them exactly as the caller gave them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Count
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns import services
from campaigns.models import Campaign, CampaignResult, ResultState

PENDING = "pending"
OFFLINE = "offline"
# Per-host states a results listing can hold: the stored answers plus the hosts still owing one.
RESULT_STATES = (*ResultState.values, PENDING, OFFLINE)
_CHUNK = 5000  # ids per ``IN (...)``, well under SQLite's variable limit


class TargetsShapeSerializer(serializers.Serializer):
    """Only documents the shape in the schema; ``services.Targets.parse`` does the checking."""

    hosts = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Host ids, hostnames, uuids or serials."
    )
    labels = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Label ids/names."
    )
    teams = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Team ids or names."
    )
    all = serializers.BooleanField(required=False, help_text="Every host the caller may query.")


@extend_schema_field(TargetsShapeSerializer)
class TargetsField(serializers.JSONField):
    """The targets as raw JSON: ids stay ints and names stay strings, exactly as given."""


class CampaignCreateSerializer(serializers.Serializer):
    sql = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="osquery SQL to run."
    )
    query_id = serializers.IntegerField(
        required=False, allow_null=True, help_text="A saved query to run instead of `sql`."
    )
    targets = TargetsField(required=False, allow_null=True)


class CampaignRunSerializer(CampaignCreateSerializer):
    timeout = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0.0,
        help_text="Seconds to wait for the online targets (default LIVE_QUERY_REST_PERIOD, at most 120).",
    )


class TotalsSerializer(serializers.Serializer):
    targeted = serializers.IntegerField()
    online = serializers.IntegerField()
    offline = serializers.IntegerField()
    missing = serializers.IntegerField()
    count = serializers.IntegerField(help_text="Fleet's name for `targeted`.")
    missing_in_action = serializers.IntegerField(help_text="Fleet's name for `missing`.")


class StatusSummarySerializer(serializers.Serializer):
    expected_results = serializers.IntegerField(help_text="Targets online when the campaign started.")
    actual_results = serializers.IntegerField()
    # Plain strings, not enums: the schema already has a "status" enum per model, and a third one
    # with the same name would get a hashed component name.
    status = serializers.CharField(help_text="`finished` once every online target answered, else `pending`.")
    campaign_status = serializers.CharField(help_text="The campaign's own status (see Campaign.status).")
    rows = serializers.IntegerField()
    no_rows = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField()
    offline = serializers.IntegerField()


class CampaignSerializer(serializers.ModelSerializer):
    """A campaign with its target counts and progress.

    ``status_summary`` needs per-state counts; list views compute them for a whole page at once
    (``page_breakdowns``) and pass them in ``context["breakdowns"]``, so a page costs two queries
    instead of two per campaign.
    """

    created_by = serializers.SerializerMethodField()
    targets = serializers.SerializerMethodField()
    totals = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = [
            "id",
            "sql",
            "query_name",
            "status",
            "created_by",
            "created_at",
            "ended_at",
            "targets",
            "totals",
            "summary",
            "truncated",
        ]
        read_only_fields = fields

    def get_created_by(self, campaign: Campaign) -> str | None:
        return campaign.created_by.username if campaign.created_by_id else None

    @extend_schema_field(TargetsShapeSerializer)
    def get_targets(self, campaign: Campaign) -> dict[str, Any]:
        return {
            "hosts": campaign.target_hosts,
            "labels": campaign.target_labels,
            "teams": campaign.target_teams,
            "all": campaign.target_all,
        }

    @extend_schema_field(TotalsSerializer)
    def get_totals(self, campaign: Campaign) -> dict[str, int]:
        return services.totals(campaign)

    @extend_schema_field(StatusSummarySerializer)
    def get_summary(self, campaign: Campaign) -> dict[str, Any]:
        counts = self.context.get("breakdowns", {}).get(campaign.pk)
        return services.status_summary(campaign, counts)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def page_breakdowns(campaigns: Sequence[Campaign]) -> dict[int, dict[str, int]]:
    """``services.breakdown`` for many campaigns at once (same numbers, a bounded number of queries)."""
    ids = [c.pk for c in campaigns]
    by_state: dict[int, dict[str, int]] = {pk: {} for pk in ids}
    for campaign_id, state, n in (
        CampaignResult.objects.filter(campaign_id__in=ids)
        .values_list("campaign_id", "state")
        .annotate(n=Count("id"))
        .values_list("campaign_id", "state", "n")
        .order_by()
    ):
        by_state[campaign_id][state] = n
    # Offline-at-start hosts that answered since: only campaigns that have both need a look.
    offline = {c.pk: set(c.offline_host_ids) for c in campaigns if c.offline_host_ids and by_state[c.pk]}
    answered_offline = dict.fromkeys(ids, 0)
    all_offline = sorted(set().union(*offline.values())) if offline else []
    for chunk in _chunks(all_offline):
        for campaign_id, host_id in CampaignResult.objects.filter(
            campaign_id__in=list(offline), host_id__in=chunk
        ).values_list("campaign_id", "host_id"):
            answered_offline[campaign_id] += host_id in offline[campaign_id]
    return {c.pk: services.breakdown_counts(c, by_state[c.pk], answered_offline[c.pk]) for c in campaigns}


def breakdown_of(campaign: Campaign, results: Sequence[CampaignResult]) -> dict[str, int]:
    """``services.breakdown`` computed from answers already in hand (no query)."""
    by_state: dict[str, int] = {}
    for result in results:
        by_state[result.state] = by_state.get(result.state, 0) + 1
    offline = set(campaign.offline_host_ids)
    return services.breakdown_counts(campaign, by_state, sum(r.host_id in offline for r in results))


class ResultSerializer(serializers.Serializer):
    """One target host's state: its answer (``rows``/``no_rows``/``failed``), or still owing one."""

    id = serializers.IntegerField(allow_null=True, help_text="The stored answer's id; null while unanswered.")
    host_id = serializers.IntegerField()
    hostname = serializers.CharField()
    state = serializers.ChoiceField(choices=RESULT_STATES)
    rows = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    row_count = serializers.IntegerField(help_text="Rows the host sent (more than `rows` when capped).")
    error = serializers.CharField(allow_null=True)
    received_at = serializers.DateTimeField(allow_null=True)


class PaginatedResultsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ResultSerializer(many=True)


class CampaignRunResponseSerializer(serializers.Serializer):
    campaign = CampaignSerializer()
    results = ResultSerializer(many=True)
    summary = StatusSummarySerializer()
    timed_out = serializers.BooleanField(help_text="True when some online target had not answered in time.")


class ErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    errors = serializers.JSONField(required=False)
