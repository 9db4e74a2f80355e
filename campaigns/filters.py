"""Filters for the campaign list (``GET /api/v1/campaigns/?status=running``)."""

from __future__ import annotations

import django_filters

from campaigns.models import Campaign, CampaignStatus


class CampaignFilterSet(django_filters.FilterSet):
    # Repeatable (``?status=waiting&status=running``) so "every active campaign" is one request.
    status = django_filters.MultipleChoiceFilter(choices=CampaignStatus.choices)

    class Meta:
        model = Campaign
        fields = ["status"]
