"""Filters of the task REST lists (django-filter)."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from hostscripts.filters import TeamIdFilter
from taskserver.models import MetricDestination, RouteType, Task, TaskAgent


class TaskFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name.")
    plugin = django_filters.CharFilter(help_text="The plugin, exactly.")
    enabled = django_filters.BooleanFilter()
    route_type = django_filters.ChoiceFilter(choices=RouteType.choices)
    team_id = TeamIdFilter(field_name="team", help_text="A team's tasks; 0: global tasks.")

    class Meta:
        model = Task
        fields = ["name", "plugin", "enabled", "route_type", "team_id"]


class TaskAgentFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name.")
    tag = django_filters.CharFilter(method="_tag", help_text="Agents carrying this tag.")
    online = django_filters.BooleanFilter()
    enabled = django_filters.BooleanFilter()
    team_id = TeamIdFilter(field_name="team", help_text="A team's agents; 0: global agents.")

    class Meta:
        model = TaskAgent
        fields = ["name", "tag", "online", "enabled", "team_id"]

    def _tag(self, queryset: QuerySet[TaskAgent], name: str, value: str) -> QuerySet[TaskAgent]:
        # Tags are a JSON list; containment lookups differ per database, so match in Python
        # over the (small) candidate set and filter by id.
        ids = [pk for pk, tags in queryset.values_list("pk", "tags") if value in (tags or [])]
        return queryset.filter(pk__in=ids)


class MetricDestinationFilterSet(django_filters.FilterSet):
    team_id = TeamIdFilter(field_name="team", help_text="A team's destinations; 0: global ones.")

    class Meta:
        model = MetricDestination
        fields = ["kind", "enabled", "team_id"]
