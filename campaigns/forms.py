"""The live-query page's form: SQL plus a target picker, turned into the targets ``services`` takes.

The form only shapes input; ``campaigns.services`` decides what is valid (SQL, unknown hosts or
teams, nothing targeted), so the console refuses exactly what REST and the command refuse. The
SQL is checked here too, with the same ``validate_sql``, only so its error lands on the SQL field.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from campaigns.services import MAX_TARGET_ITEMS, RUN_ROLES
from hosts.choices import HostStatus
from hosts.filters import with_host_counts
from hosts.models import Host, Label, Team
from hosts.permissions import scope_queryset, visible_team_ids
from hosts.status import status_of
from queries.sql import MAX_SQL_LENGTH, validate_sql

# Hostnames, UUIDs and serials never hold commas or white space, so either separates them.
_SEPARATORS = re.compile(r"[\s,;]+")
# How many hosts the host-list action may hand over in the URL (about 4 KB of ids).
MAX_PRESELECTED = 500


def parse_identifiers(text: str) -> list[str]:
    """Host identifiers typed or pasted one per line, or separated by commas or spaces."""
    seen: dict[str, None] = {}
    for item in _SEPARATORS.split(text or ""):
        if item:
            seen.setdefault(item, None)
    return list(seen)


def parse_id_list(value: str | None) -> list[int]:
    """``"3,1,2"`` from the host-list action's redirect, as ints; anything else is dropped."""
    ids = [int(part) for part in (value or "").split(",") if part.strip().isdigit()]
    return list(dict.fromkeys(ids))[:MAX_PRESELECTED]


def runnable_teams(user: Any, roles: frozenset[str] = RUN_ROLES) -> QuerySet[Team]:
    """The teams whose hosts the user may live query, with their host counts for the picker."""
    team_ids = visible_team_ids(user, roles)
    teams = Team.objects.all() if team_ids is None else Team.objects.filter(id__in=team_ids)
    return with_host_counts(teams.order_by("name"))


def runnable_hosts(user: Any, roles: frozenset[str] = RUN_ROLES) -> QuerySet[Host]:
    """The hosts the user may live query (the same scope ``services.resolve_targets`` applies)."""
    return scope_queryset(Host.objects.all(), user, roles)


class TeamChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Team) -> str:
        count = getattr(obj, "host_count", None)
        return obj.name if count is None else f"{obj.name} ({count} host{'s' if count != 1 else ''})"


class HostChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Host) -> str:
        # With its status, since Fleet's host picker left admins guessing who would answer.
        seen = getattr(obj, "seen", None)
        state = status_of(seen and seen.seen_time, seen and seen.offline_after)
        return f"{obj.display_name} ({HostStatus(state).label.lower()})"


class TargetForm(forms.Form):
    """What to ask: every host, whole teams, labels, chosen hosts, or hosts typed by name (any mix).

    ``selected_hosts`` only ever lists the hosts handed over by the host-list action (or posted
    back), never the whole fleet, so the page stays small on 100,000 hosts.
    """

    all_hosts = forms.BooleanField(required=False, label="All hosts")
    teams = TeamChoiceField(queryset=Team.objects.none(), required=False, widget=forms.CheckboxSelectMultiple)
    selected_hosts = HostChoiceField(
        queryset=Host.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    hosts = forms.CharField(
        required=False,
        label="Hosts by name",
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "cols": 60,
                "class": "vLargeTextField live-query-hosts",
                "spellcheck": "false",
                "placeholder": "host name, UUID or serial number; one per line or separated by commas",
            }
        ),
        help_text="Names as the host list shows them, hostnames, UUIDs, hardware serials or host ids.",
    )

    def __init__(
        self,
        *args: Any,
        user: Any,
        preselected: list[int] | None = None,
        roles: frozenset[str] = RUN_ROLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["teams"].queryset = runnable_teams(user, roles)
        self.fields["labels"] = forms.ModelMultipleChoiceField(
            queryset=Label.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
        )
        if self.is_bound:
            wanted = [int(v) for v in self.data.getlist(self.add_prefix("selected_hosts")) if v.isdigit()]
        else:
            wanted = preselected or []
            self.initial.setdefault("selected_hosts", wanted)
        hosts = runnable_hosts(user, roles).filter(id__in=wanted[:MAX_TARGET_ITEMS]).select_related("seen")
        self.fields["selected_hosts"].queryset = hosts.order_by("hostname")

    def clean_hosts(self) -> list[str]:
        identifiers = parse_identifiers(self.cleaned_data.get("hosts", ""))
        if len(identifiers) > MAX_TARGET_ITEMS:
            raise ValidationError(f"Give at most {MAX_TARGET_ITEMS} hosts; target a team or all hosts.")
        return identifiers

    def targets(self) -> dict[str, Any]:
        """The targets in the shape ``services.Targets.parse`` reads (call after ``is_valid``)."""
        data = self.cleaned_data
        host_ids = [host.pk for host in data.get("selected_hosts") or []]
        chosen = {str(pk) for pk in host_ids}
        return {
            "all": bool(data.get("all_hosts")),
            "hosts": host_ids + [i for i in data.get("hosts", []) if i not in chosen],
            "teams": [team.pk for team in data.get("teams") or []],
            "labels": [label.pk for label in data.get("labels") or []],
        }


class LiveQueryForm(TargetForm):
    """The Run form: the SQL, then the targets (fields render in this order)."""

    sql = forms.CharField(
        label="SQL",
        strip=False,
        widget=forms.Textarea(
            attrs={
                "rows": 8,
                "cols": 100,
                "class": "vLargeTextField live-query-sql",
                "maxlength": MAX_SQL_LENGTH,  # the browser stops there, before the server must refuse
                "spellcheck": "false",
                "autocapitalize": "off",
                "autocomplete": "off",
                "placeholder": "SELECT * FROM os_version;",
            }
        ),
    )
    field_order = ["sql", "all_hosts", "teams", "labels", "selected_hosts", "hosts"]

    def __init__(self, *args: Any, saved_query: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if saved_query is not None:
            # A saved query runs as it is: the posted SQL is ignored (observers may not edit it).
            self.fields["sql"].disabled = True
            self.fields["sql"].initial = saved_query.query
            self.initial["sql"] = saved_query.query

    def clean_sql(self) -> str:
        try:
            return validate_sql(self.cleaned_data.get("sql"))
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
