"""Filters over scripts and runs, shared by REST (FilterSets) and the console (list filters).

A run's status is not a column: it follows from ``cancelled`` and ``exit_code`` (Fleet's
``host_script_results``), so :func:`filter_status` turns each status into the conditions that
define it, all served by the host-queue index.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet

from fleet.numbers import parse_id
from hostscripts.models import RunStatus, Script, ScriptKind, ScriptRun

NO_TEAM = 0  # team_id=0: global scripts, or hosts without a team


def filter_status(queryset: QuerySet[ScriptRun], status: str) -> QuerySet[ScriptRun]:
    """Runs in one :class:`RunStatus`; an unknown status matches nothing."""
    if status == RunStatus.CANCELLED:
        return queryset.filter(cancelled=True)
    live = queryset.filter(cancelled=False)
    if status == RunStatus.PENDING:
        return live.filter(exit_code__isnull=True)
    if status == RunStatus.RAN:
        return live.filter(exit_code=0)
    if status == RunStatus.ERROR:
        return live.filter(exit_code__isnull=False).exclude(exit_code=0)
    return queryset.none()


def filter_team(queryset: QuerySet, team_id: int, field: str = "team") -> QuerySet:
    """Objects of one team; ``0``: those without a team."""
    if team_id == NO_TEAM:
        return queryset.filter(**{f"{field}__isnull": True})
    return queryset.filter(**{f"{field}_id": team_id})


class IdFilter(django_filters.CharFilter):
    """An id from the query string, read with ``parse_id``: text that is no id matches nothing
    (``?host_id=1e99`` is an empty list, not an overflow deep in the database driver)."""

    def filter(self, queryset: QuerySet, value: Any) -> QuerySet:
        if value in (None, ""):
            return queryset
        parsed = parse_id(str(value))
        if parsed is None:
            return queryset.none()
        return self.apply(queryset, parsed)

    def apply(self, queryset: QuerySet, value: int) -> QuerySet:
        return queryset.filter(**{self.field_name: value})


class TeamIdFilter(IdFilter):
    """A team's objects; ``0``: those without a team."""

    def apply(self, queryset: QuerySet, value: int) -> QuerySet:
        return filter_team(queryset, value, field=self.field_name)


class ScriptFilterSet(django_filters.FilterSet):
    team_id = TeamIdFilter(field_name="team", help_text="A team's scripts; 0: global scripts.")

    class Meta:
        model = Script
        fields = ["team_id"]


class RunFilterSet(django_filters.FilterSet):
    host_id = IdFilter(field_name="host_id", help_text="Runs on this host.")
    team_id = TeamIdFilter(
        field_name="host__team", help_text="Runs on a team's hosts; 0: hosts without a team."
    )
    script_id = IdFilter(field_name="script_id", help_text="Runs of this saved script.")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices, method="_status")
    kind = django_filters.ChoiceFilter(choices=ScriptKind.choices)

    class Meta:
        model = ScriptRun
        fields = ["host_id", "team_id", "script_id", "status", "kind"]

    def _status(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return filter_status(queryset, value)
