"""Write the configuration back as Fleet YAML specs (``manage.py export``).

The output is what ``apply`` reads: applied to an empty database it recreates the same
queries, labels (builtin ones are Fleet's and left out), packs, teams, enroll secrets and agent
options, and applied to the database it came from it is all "unchanged". Tasks and metric
destinations follow, with their secret values written as ``"<secret>"`` (kept as stored when the
file is applied again; a new server needs the values themselves) and ``byIds`` routes naming
their agents (which exist only once they have connected).
"""

from __future__ import annotations

from typing import Any

import yaml

from hosts.agent_options import default_agent_options
from hosts.models import EnrollSecret, FleetSettings, Label, LabelMembershipType, LabelType, Team
from packs.models import Pack
from packs.spec.labels import identifiers_of
from packs.spec.tasks import export_destination, export_task
from queries.models import Query
from taskserver.models import MetricDestination, Task


def _doc(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "spec": spec}


def _secrets(team: Team | None) -> list[dict[str, str]]:
    rows = EnrollSecret.objects.filter(team=team).order_by("created_at", "id")
    return [{"secret": secret} for secret in rows.values_list("secret", flat=True)]


def _query(query: Query) -> dict[str, Any]:
    return {
        "name": query.name,
        "description": query.description,
        "query": query.query,
        "team": query.team.name if query.team_id else "",
        "platform": query.platform,
        "min_osquery_version": query.min_osquery_version,
        "interval": query.interval,
        "logging": query.logging,
        "observer_can_run": query.observer_can_run,
        "automations_enabled": query.automations_enabled,
        "discard_data": query.discard_data,
    }


def _label(label: Label) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": label.name,
        "description": label.description,
        "platform": label.platform,
        "label_membership_type": label.label_membership_type,
    }
    if label.label_membership_type == LabelMembershipType.MANUAL:
        spec["hosts"] = identifiers_of([m.host_id for m in label.memberships.all()])
    else:
        spec["query"] = label.query
    return spec


def _pack(pack: Pack) -> dict[str, Any]:
    targets: dict[str, list[str]] = {
        "labels": sorted(label.name for label in pack.target_labels.all()),
        "teams": sorted(team.name for team in pack.target_teams.all()),
    }
    host_ids = [host.pk for host in pack.target_hosts.all()]
    if host_ids:
        targets["hosts"] = identifiers_of(host_ids)
    entries = []
    for sq in pack.scheduled.all():
        entry: dict[str, Any] = {"query": sq.query.name, "name": sq.name}
        if sq.query.team_id:
            entry["team"] = sq.query.team.name
        entry["description"] = sq.description
        entry["interval"] = sq.interval
        for key in ("snapshot", "removed", "shard", "denylist", "platform", "version"):
            value = getattr(sq, key)
            if value is not None and value != "":
                entry[key] = value
        entries.append(entry)
    return {
        "name": pack.name,
        "description": pack.description,
        "platform": pack.platform,
        "disabled": pack.disabled,
        "targets": targets,
        "queries": entries,
    }


def export_documents() -> list[dict[str, Any]]:
    """Every spec document, in an order that also reads well (settings first, packs last)."""
    stored = FleetSettings.objects.filter(pk=1).values_list("agent_options", flat=True).first()
    documents = [
        _doc("config", {"agent_options": stored if stored is not None else default_agent_options()}),
        _doc("enroll_secret", {"secrets": _secrets(None)}),
    ]
    for team in Team.objects.order_by("name"):
        spec: dict[str, Any] = {"name": team.name}
        if team.description:
            spec["description"] = team.description
        if team.agent_options is not None:
            spec["agent_options"] = team.agent_options
        spec["secrets"] = _secrets(team)
        documents.append(_doc("team", {"team": spec}))
    queries = Query.objects.select_related("team").order_by("team__name", "name")
    documents.extend(_doc("query", _query(query)) for query in queries)
    labels = Label.objects.exclude(label_type=LabelType.BUILTIN).prefetch_related("memberships")
    documents.extend(_doc("label", _label(label)) for label in labels.order_by("name"))
    packs = Pack.objects.prefetch_related(
        "target_labels", "target_teams", "target_hosts", "scheduled__query__team"
    ).order_by("name")
    documents.extend(_doc("pack", _pack(pack)) for pack in packs)
    destinations = MetricDestination.objects.select_related("team").order_by("team__name", "name")
    documents.extend(_doc("metric_destination", export_destination(d)) for d in destinations)
    tasks = Task.objects.select_related("team").order_by("team__name", "name")
    documents.extend(_doc("task", export_task(task)) for task in tasks)
    return documents


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (SQL, descriptions) as ``|`` blocks, so the YAML stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000
    )


def export_yaml() -> str:
    return dump_yaml(export_documents())
