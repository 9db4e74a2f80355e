"""Filters on software: the REST list filters, and the console host list's "software" filter.

``SoftwareHostListFilter`` is meant for ``HostAdmin.list_filter``: it reads
``?software_title_id=`` and ``?software_version_id=`` (the links of the Software pages) and
narrows hosts with one semi-join on the (version, host) index of the links, so it stays cheap on
100,000 hosts. There are far too many titles to list as choices: the sidebar shows the selected
one, with a link that clears it.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from fleet.numbers import parse_id
from hosts.models import Host
from software.choices import Source
from software.models import HostSoftware, SoftwareTitle, SoftwareVersion

TITLE_PARAMETER = "software_title_id"
VERSION_PARAMETER = "software_version_id"


def hosts_with_title(hosts: QuerySet[Host], title_id: int) -> QuerySet[Host]:
    """Hosts that have any version of the title."""
    links = HostSoftware.objects.filter(version__title_id=title_id).values("host_id")
    return hosts.filter(id__in=links)


def hosts_with_version(hosts: QuerySet[Host], version_id: int) -> QuerySet[Host]:
    """Hosts that have this version."""
    return hosts.filter(id__in=HostSoftware.objects.filter(version_id=version_id).values("host_id"))


class SoftwareHostListFilter(admin.ListFilter):
    """The host list's "software" filter: ``?software_title_id=`` and/or ``?software_version_id=``."""

    title = "software"
    parameters = (TITLE_PARAMETER, VERSION_PARAMETER)

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.ids: dict[str, int] = {}
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                text = value[-1] if isinstance(value, list) else value
                self.used_parameters[name] = text
                parsed = parse_id(text)
                if parsed is not None:  # anything else is ignored, as the other host filters do
                    self.ids[name] = parsed

    def has_output(self) -> bool:
        return bool(self.ids)

    def expected_parameters(self) -> list[str]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Host]) -> QuerySet[Host]:
        if VERSION_PARAMETER in self.ids:
            queryset = hosts_with_version(queryset, self.ids[VERSION_PARAMETER])
        if TITLE_PARAMETER in self.ids:
            queryset = hosts_with_title(queryset, self.ids[TITLE_PARAMETER])
        return queryset

    def describe(self) -> str:
        """What the filter selects, e.g. "Google Chrome 131.0 (Chrome extensions)"."""
        if VERSION_PARAMETER in self.ids:
            version = (
                SoftwareVersion.objects.select_related("title").filter(pk=self.ids[VERSION_PARAMETER]).first()
            )
            if version is not None:
                return f"{version.title.name} {version.version} ({version.title.get_source_display()})"
        if TITLE_PARAMETER in self.ids:
            title = SoftwareTitle.objects.filter(pk=self.ids[TITLE_PARAMETER]).first()
            if title is not None:
                return str(title)
        return "unknown software"

    def choices(self, changelist: Any) -> list[dict[str, Any]]:
        return [
            {
                "selected": False,
                "query_string": changelist.get_query_string(remove=list(self.parameters)),
                "display": "All",
            },
            {"selected": True, "query_string": changelist.get_query_string(), "display": self.describe()},
        ]


class SoftwareTitleFilterSet(django_filters.FilterSet):
    """``?source=`` for the software list (``team_id`` and ``platform`` choose the counted hosts)."""

    source = django_filters.ChoiceFilter(
        choices=Source.choices, help_text="The osquery table (apps, programs, ...)."
    )

    class Meta:
        model = SoftwareTitle
        fields = ["source"]


class HostSoftwareFilterSet(django_filters.FilterSet):
    """``?source=`` for a host's software."""

    source = django_filters.ChoiceFilter(
        field_name="version__title__source", choices=Source.choices, help_text="The osquery table."
    )

    class Meta:
        model = HostSoftware
        fields = ["source"]
