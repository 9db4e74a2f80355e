"""Which hosts a run on many hosts reaches: hosts by id, members of labels, a team's hosts.

Shared by REST (``scripts/run/batch/``), the host list's "Run script" action and
``manage.py run_script``. The targets are bounded (``SCRIPTS["MAX_HOSTS_PER_RUN"]``) before any
host row is loaded, so a careless "every host" cannot queue a million runs in one request. Hosts
the user may not see are reported as unknown (nothing leaks about another team's hosts); hosts
they may see but not act on are skipped with a reason, as hosts that cannot run the script are.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet

from hosts.models import Host
from hostscripts import access
from hostscripts.services import QueueResult, ScriptError, queue_runs

UNKNOWN_HOST = "No such host (or not one you may see)."
NO_TEAM = 0  # team_id 0: the hosts without a team, as in Fleet's filters


def max_hosts() -> int:
    return int(settings.SCRIPTS["MAX_HOSTS_PER_RUN"])


@dataclass
class Targets:
    """The hosts to queue on, and those refused before queueing (reason -> host ids)."""

    hosts: list[Host] = field(default_factory=list)
    refused: dict[str, list[int]] = field(default_factory=dict)


def target_queryset(
    *,
    host_ids: Collection[int] = (),
    label_ids: Collection[int] = (),
    team_id: int | None = None,
) -> QuerySet[Host]:
    """Hosts matching any of the criteria (their union), not yet scoped to a user."""
    condition = Q(pk__in=list(host_ids)) if host_ids else Q(pk__in=[])
    if label_ids:
        condition |= Q(label_memberships__label_id__in=list(label_ids))
    if team_id is not None:
        condition |= Q(team__isnull=True) if team_id == NO_TEAM else Q(team_id=team_id)
    return Host.objects.filter(condition).distinct()


def resolve(user: Any, hosts: QuerySet[Host], *, named_ids: Collection[int] = ()) -> Targets:
    """The hosts of ``hosts`` the user may see, split into runnable ones and refusals.

    ``user`` ``None`` is the operator of ``manage.py run_script`` without ``--user``, who has the
    server's shell and so every host. ``named_ids`` are host ids the caller asked for by id: those
    that are not visible are reported as unknown. Raises :class:`ScriptError` (400) beyond the
    per-run limit.
    """
    limit = max_hosts()
    too_many = ScriptError(
        f"Too many hosts: a run may target at most {limit:,}. Narrow the targets (a team, labels).",
        status=400,
    )
    if len(named_ids) > limit:  # before any query: the ids would all be parameters of one
        raise too_many
    visible = hosts if user is None else access.visible_hosts(user, hosts)
    ids = list(visible.order_by("pk").values_list("pk", flat=True)[: limit + 1])
    if len(ids) > limit:
        raise too_many
    targets = Targets()
    missing = sorted(set(named_ids) - set(ids))
    if missing:
        targets.refused[UNKNOWN_HOST] = missing
    runnable = set(ids)
    if user is not None:
        runnable &= set(
            access.runnable_hosts(user, Host.objects.filter(pk__in=ids)).values_list("pk", flat=True)
        )
    denied = [pk for pk in ids if pk not in runnable]
    if denied:
        targets.refused[access.NOT_ALLOWED_TO_RUN] = denied
    targets.hosts = list(Host.objects.filter(pk__in=runnable).select_related("team").order_by("pk"))
    return targets


def queue_on_targets(targets: Targets, **run: Any) -> QueueResult:
    """Queue on the runnable targets; the refusals join the services' skipped hosts.

    With no runnable target, ``queue_runs`` still refuses what it would refuse anyway (the
    server-wide switch, bad contents), so the answer does not depend on who was selected.
    """
    result = queue_runs(targets.hosts, **run)
    for reason, host_ids in targets.refused.items():
        result.skipped.setdefault(reason, []).extend(host_ids)
    return result
