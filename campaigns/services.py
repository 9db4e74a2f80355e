"""Starting, answering, stopping and sweeping live-query campaigns.

Every surface (REST, console, WebSocket, ``manage.py live_query``) and the agent API go through
these functions, so the rules live in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from redis import RedisError

from activities import events as activity_events
from campaigns import stream
from campaigns.answer_insert import insert_result
from campaigns.models import ACTIVE_STATUSES, Campaign, CampaignResult, CampaignStatus, ResultState
from campaigns.store import get_store
from fleet.metrics import LIVE_QUERY_ANSWERS
from hosts import seen
from hosts.choices import HostStatus, Role
from hosts.identifiers import match_hosts, split_ids_and_names
from hosts.labels import resolve_label_hosts
from hosts.models import Host, Team
from hosts.permissions import ALL_ROLES, has_any_role, scope_queryset, visible_team_ids
from hosts.status import status_of
from queries.models import Query
from queries.sql import validate_sql

logger = logging.getLogger(__name__)

QUERY_PREFIX = "fleet_distributed_query_"
# Fleet: admins, maintainers and observers+ may run new (ad hoc) queries.
RUN_ROLES = frozenset({Role.ADMIN, Role.MAINTAINER, Role.OBSERVER_PLUS})
MAX_TARGET_ITEMS = 10_000


class CampaignError(Exception):
    """Bad input or a refused action, with a message for the user (a 400 or 403)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Targets:
    """What an admin asked for: host identifiers, label and team ids or names, or everything."""

    hosts: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    teams: list[Any] = field(default_factory=list)
    all_hosts: bool = False

    @classmethod
    def parse(cls, data: Any) -> Targets:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise CampaignError('targets must be an object like {"hosts": [...], "teams": [...]}')
        unknown = set(data) - {"hosts", "labels", "teams", "all"}
        if unknown:
            raise CampaignError(f"unknown target kind(s): {', '.join(sorted(unknown))}")
        parsed: dict[str, list[Any]] = {}
        for kind in ("hosts", "labels", "teams"):
            items = data.get(kind) or []
            if not isinstance(items, list) or not all(
                isinstance(i, (int, str)) and not isinstance(i, bool) for i in items
            ):
                raise CampaignError(f"targets.{kind} must be a list of ids or names")
            if len(items) > MAX_TARGET_ITEMS:
                raise CampaignError(f"targets.{kind} has more than {MAX_TARGET_ITEMS} items")
            parsed[kind] = items
        all_hosts = data.get("all", False)
        if not isinstance(all_hosts, bool):
            raise CampaignError("targets.all must be true or false")
        targets = cls(all_hosts=all_hosts, **parsed)
        if not (targets.all_hosts or targets.hosts or targets.labels or targets.teams):
            raise CampaignError("no targets: give hosts, labels, teams or all")
        return targets


def _resolve_hosts(visible: QuerySet[Host], identifiers: list[Any]) -> set[int]:
    """Hosts by id, hostname, uuid or hardware serial; unknown ones are an error, all at once."""
    host_ids, missing = match_hosts(identifiers, visible)
    if missing:
        raise CampaignError(f"unknown host(s): {', '.join(missing[:20])}")
    return host_ids


def _resolve_teams(user: Any, identifiers: list[Any], roles: frozenset[str] = RUN_ROLES) -> set[int]:
    ids, names = split_ids_and_names(identifiers)
    teams = Team.objects.filter(Q(id__in=ids) | Q(name__in=names))
    allowed = visible_team_ids(user, roles)
    if allowed is not None:
        teams = teams.filter(id__in=allowed)
    found = {(team_id, name) for team_id, name in teams.values_list("id", "name")}
    matched = {t for t, _ in found} | {str(t) for t, _ in found} | {n for _, n in found}
    missing = [str(i) for i in identifiers if i not in matched and str(i).strip() not in matched]
    if missing:
        raise CampaignError(f"unknown team(s): {', '.join(missing[:20])}")
    return {t for t, _ in found}


def _resolve_labels(user: Any, identifiers: list[Any]) -> set[int]:
    """Label targets (ids or names) resolve to their member hosts; unknown labels are a 400."""
    try:
        return resolve_label_hosts(user, identifiers)
    except LookupError as exc:  # hosts.labels.UnknownLabelsError, "unknown label(s): ..."
        raise CampaignError(str(exc)) from None


def resolve_targets(user: Any, targets: Targets, roles: frozenset[str] = RUN_ROLES) -> set[int]:
    """The ids of the hosts the targets cover, limited to the teams the user may query."""
    visible = scope_queryset(Host.objects.all(), user, roles)
    host_ids: set[int] = set()
    if targets.all_hosts:
        host_ids.update(visible.values_list("id", flat=True))
    if targets.hosts:
        host_ids |= _resolve_hosts(visible, targets.hosts)
    if targets.teams:
        team_ids = _resolve_teams(user, targets.teams, roles)
        host_ids.update(visible.filter(team_id__in=team_ids).values_list("id", flat=True))
    if targets.labels:
        label_hosts = _resolve_labels(user, targets.labels)
        host_ids.update(visible.filter(id__in=label_hosts).values_list("id", flat=True))
    return host_ids


@dataclass
class TargetCounts:
    targeted: int
    online: int
    offline: int
    missing: int
    offline_ids: list[int]


def count_targets(host_ids: Iterable[int]) -> TargetCounts:
    """Online/offline/missing as of now, in one query (missing hosts count as offline too)."""
    seen.flush()  # this process's buffered check-ins count
    ids = sorted(host_ids)
    now = timezone.now()
    online = missing = 0
    offline_ids: list[int] = []
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        rows = Host.objects.filter(id__in=chunk).values_list("id", "seen__seen_time", "seen__offline_after")
        for host_id, seen_time, offline_after in rows:
            status = status_of(seen_time, offline_after, now)
            if status == HostStatus.ONLINE:
                online += 1
            else:
                offline_ids.append(host_id)
                missing += status == HostStatus.MISSING
    return TargetCounts(len(ids), online, len(offline_ids), missing, offline_ids)


def check_may_run(user: Any, roles: frozenset[str] = RUN_ROLES) -> None:
    if not (user and user.is_authenticated and user.is_active):
        raise CampaignError("authentication required", status=401)
    if not (user.is_superuser or has_any_role(user, roles)):
        raise CampaignError("your role may not run live queries", status=403)


def saved_query_for(user: Any, query_id: Any) -> Query:
    """A saved query the user may see (global, or of one of their teams); unknown ones are a 400."""
    if isinstance(query_id, bool) or not isinstance(query_id, int):
        raise CampaignError("query_id must be an integer")
    query = Query.objects.filter(pk=query_id).first()
    team_ids = visible_team_ids(user, ALL_ROLES)
    if query is None or (
        query.team_id is not None and team_ids is not None and query.team_id not in team_ids
    ):
        raise CampaignError(f"unknown query: {query_id}")
    return query


def create_campaign_for_query(user: Any, query_id: Any, targets: Targets | dict | None) -> Campaign:
    """Run a saved query live. Observers may too when it allows them (Fleet's observer_can_run)."""
    query = saved_query_for(user, query_id)
    roles = RUN_ROLES | {Role.OBSERVER} if query.observer_can_run else RUN_ROLES
    return create_campaign(
        user, query.query, targets, query_name=query.name, roles=frozenset(roles), query_id=query.pk
    )


def create_campaign(
    user: Any,
    sql: Any,
    targets: Targets | dict | None,
    query_name: str = "",
    roles: frozenset[str] = RUN_ROLES,
    query_id: int | None = None,
) -> Campaign:
    """Validate, resolve the targets once, record the campaign and hand it to the store.

    ``roles`` are the roles that may run it, and on which teams' hosts (``RUN_ROLES`` for SQL
    typed by the user; observers too for saved queries marked ``observer_can_run``).
    """
    check_may_run(user, roles)
    try:
        sql = validate_sql(sql)
    except ValidationError as exc:
        raise CampaignError(" ".join(exc.messages)) from None
    if not isinstance(targets, Targets):
        targets = Targets.parse(targets)
    host_ids = resolve_targets(user, targets, roles)
    if not host_ids:
        raise CampaignError("no hosts targeted")
    from campaigns.tasks import run_upkeep_if_due  # tasks import this module

    run_upkeep_if_due()  # embedded default (no Celery beat): expire and sweep, at most once a minute
    counts = count_targets(host_ids)
    campaign = Campaign.objects.create(
        sql=sql,
        query_name=query_name,
        created_by=user,
        target_hosts=targets.hosts,
        target_labels=targets.labels,
        target_teams=targets.teams,
        target_all=targets.all_hosts,
        host_ids=sorted(host_ids),
        offline_host_ids=counts.offline_ids,
        targeted_count=counts.targeted,
        online_count=counts.online,
        offline_count=counts.offline,
        missing_count=counts.missing,
    )
    try:
        get_store().start(campaign.id, sql, host_ids)
    except Exception as exc:
        Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.STOPPED, ended_at=timezone.now())
        logger.error("live-query store unavailable: %s", exc)
        raise CampaignError("the live-query store is unavailable; try again", status=503) from None
    activity_events.live_query(campaign, targets, query_id=query_id, roles=roles)
    return campaign


def _end(campaign_id: int, status: str) -> bool:
    """Move an active campaign to a final status; True if this call did it."""
    changed = Campaign.objects.filter(pk=campaign_id, status__in=ACTIVE_STATUSES).update(
        status=status, ended_at=timezone.now()
    )
    get_store().stop(campaign_id)
    if changed:
        stream.publish(campaign_id, {"type": "campaign.ended", "status": status})
    return bool(changed)


def stop_campaign(campaign: Campaign) -> bool:
    return _end(campaign.id, CampaignStatus.STOPPED)


def record_answer(
    campaign_id: int, host_id: int, hostname: str, rows: list[dict], status: int, error: str
) -> CampaignResult | None:
    """Keep one host's answer (called from ``distributed/write``); ``None`` if not expected.

    The answer is stored *before* the host is marked answered in the live-query store. The other
    way round, an insert that failed (the database going away) or a process killed in between left
    the host marked answered with nothing stored: the agent's retry was taken for a repeat and the
    answer was lost (found by tests/test_scale_out.py). Stored first, a database error reaches the
    agent as an ``error`` it retries (agentapi/endpoint.py), the host is still pending, and the
    retry is kept.

    "Pending" is asked of the store itself (``claim``: one Redis round trip, which also grants the
    rows kept under the campaign's cap), never of this process's copy of it, which does not know
    yet of a campaign another process started a moment ago (judged by the copy, such answers were
    dropped). A repeat meets the unique (campaign, host) row and completes the host only if the
    attempt that stored it died before doing so. Whoever completes the host counts and publishes
    the answer, then ends the campaign if it was the last: once each, and the end after the last
    answer.
    """
    store = get_store()
    wanted = len(rows) if status == 0 else 0
    try:
        granted = store.claim(campaign_id, host_id, wanted, settings.LIVE_QUERY["MAX_ROWS"])
    except RedisError as exc:  # the store is down: the host stays pending and is asked again later
        logger.warning("live-query store unavailable, answer to campaign %s not kept: %s", campaign_id, exc)
        return None
    if granted is None:
        return None  # late, repeated, or for a campaign that ended: accepted and ignored
    if status != 0:
        state, kept = ResultState.FAILED, []
    else:
        state = ResultState.ROWS if rows else ResultState.NO_ROWS
        kept = rows[:granted]
    # A DatabaseError other than a refusal propagates: nothing is stored and the host stays pending.
    result = _store_result(
        campaign_id, host_id, hostname, state, kept, len(rows), error if status != 0 else ""
    )
    stored_now = result is not None
    if result is None:  # stored already: by a repeat in another process, or an attempt that died
        result = CampaignResult.objects.filter(campaign_id=campaign_id, host_id=host_id).first()
        if result is None:
            return None  # deleted with its campaign meanwhile
    try:
        completion = store.complete_host(campaign_id, host_id)
    except RedisError as exc:  # stored; the host is asked again and its repeat completes it
        logger.warning("live-query store unavailable, campaign %s not updated: %s", campaign_id, exc)
        return result if stored_now else None
    if completion is None:
        return result if stored_now else None  # whoever marked the host answered announces it
    LIVE_QUERY_ANSWERS.labels(result.state).inc()
    if stored_now:
        cut_short = len(kept) < len(rows)
    else:  # the attempt that stored it died before marking the campaign: read it off the row
        cut_short = result.state == ResultState.ROWS and len(result.rows) < result.row_count
    if cut_short:
        Campaign.objects.filter(pk=campaign_id, truncated=False).update(truncated=True)
    if completion.answered == 1:
        Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.WAITING).update(
            status=CampaignStatus.RUNNING
        )
    stream.publish(campaign_id, {"type": "campaign.result", "result": result_message(result)})
    if completion.remaining <= 0:
        _end(campaign_id, CampaignStatus.FINISHED)
    return result


def _store_result(
    campaign_id: int, host_id: int, hostname: str, state: str, rows: list, row_count: int, error: str
) -> CampaignResult | None:
    """Insert the host's answer; ``None`` for a duplicate.

    A refusal by the database that is not a duplicate (rows it cannot store, say) would meet every
    retry of the same answer: it is stored as failed with the reason, so the campaign does not wait
    for the host forever. Other database errors (an outage) propagate, and the agent retries.
    """
    fields = {"campaign_id": campaign_id, "host_id": host_id, "hostname": hostname[:255]}
    # One INSERT is atomic by itself. A savepoint is needed only inside a transaction, which a
    # refused INSERT would otherwise break; outside one (every answer in production), atomic()
    # cost three more round trips: autocommit off, COMMIT, autocommit on.
    guard = transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()
    try:
        with guard:
            return insert_result(**fields, state=state, rows=rows, row_count=row_count, error=error)
    except (IntegrityError, DataError) as exc:
        if CampaignResult.objects.filter(campaign_id=campaign_id, host_id=host_id).exists():
            return None
        logger.warning(
            "campaign %s: host %s's answer could not be stored (%s)",
            campaign_id, host_id, exc.__class__.__name__,
        )  # fmt: skip
    return CampaignResult.objects.create(
        **fields,
        state=ResultState.FAILED,
        rows=[],
        row_count=row_count,
        error="the server could not store this answer's rows",
    )


def result_message(result: CampaignResult) -> dict[str, Any]:
    """The ``result`` payload watchers receive (Fleet's shape plus the state)."""
    return {
        "id": result.id,
        "host_id": result.host_id,
        "hostname": result.hostname,
        "state": result.state,
        "rows": result.rows,
        "row_count": result.row_count,
        "error": result.error or None,
    }


def breakdown(campaign: Campaign) -> dict[str, int]:
    """Per-host counts: with rows, no rows, failed, pending (online, unanswered), offline."""
    by_state = dict(
        CampaignResult.objects.filter(campaign=campaign)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    # Intersect in Python: an IN list of every offline host would break SQLite's variable limit.
    answered_offline = (
        len(
            set(campaign.offline_host_ids)
            & set(CampaignResult.objects.filter(campaign=campaign).values_list("host_id", flat=True))
        )
        if campaign.offline_host_ids
        else 0
    )
    return breakdown_counts(campaign, by_state, answered_offline)


def breakdown_counts(campaign: Campaign, by_state: dict[str, int], answered_offline: int) -> dict[str, int]:
    """The breakdown from answers per state and how many hosts offline at the start answered."""
    answered = sum(by_state.values())
    offline = campaign.offline_count - answered_offline
    return {
        "rows": by_state.get(ResultState.ROWS, 0),
        "no_rows": by_state.get(ResultState.NO_ROWS, 0),
        "failed": by_state.get(ResultState.FAILED, 0),
        "pending": max(0, campaign.targeted_count - answered - offline),
        "offline": offline,
    }


def status_summary(campaign: Campaign, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``status`` message: expected (online at start) vs actual answers, and the breakdown."""
    counts = counts or breakdown(campaign)
    actual = counts["rows"] + counts["no_rows"] + counts["failed"]
    # Every host online at the start answered (not merely as many answers: hosts offline at the
    # start may answer first and must not end the wait for the online ones).
    finished = not campaign.is_active or counts["pending"] == 0
    return {
        "expected_results": campaign.online_count,
        "actual_results": actual,
        "status": "finished" if finished else "pending",
        "campaign_status": campaign.status,
        **counts,
    }


def totals(campaign: Campaign) -> dict[str, int]:
    """The ``totals`` message, with Fleet's names alongside ours."""
    return {
        "targeted": campaign.targeted_count,
        "online": campaign.online_count,
        "offline": campaign.offline_count,
        "missing": campaign.missing_count,
        "count": campaign.targeted_count,
        "missing_in_action": campaign.missing_count,
    }


def sees_all_campaigns(user: Any) -> bool:
    """Superusers and global admins see everyone's campaigns; everybody else their own."""
    return bool(user.is_superuser or visible_team_ids(user, {Role.ADMIN}) is None)


def watchable(campaigns: QuerySet[Campaign], user: Any) -> QuerySet[Campaign]:
    """Narrow ``campaigns`` to those ``user`` may watch (the rule of :func:`may_watch`)."""
    return campaigns if sees_all_campaigns(user) else campaigns.filter(created_by=user)


def may_watch(user: Any, campaign: Campaign) -> bool:
    """The creator and admins (superusers and global admins) may watch and stop a campaign."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return campaign.created_by_id == user.id or sees_all_campaigns(user)


# --- background upkeep (Celery tasks call these) ---------------------------------------------------
def expire_campaigns(now=None) -> int:
    """End campaigns running past ``LIVE_QUERY["MAX_DURATION"]``."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LIVE_QUERY["MAX_DURATION"])
    ids = list(
        Campaign.objects.filter(status__in=ACTIVE_STATUSES, created_at__lt=cutoff).values_list(
            "id", flat=True
        )
    )
    return sum(_end(campaign_id, CampaignStatus.EXPIRED) for campaign_id in ids)


def sweep_store() -> int:
    """Remove from the store campaigns that ended (or vanished) in the database."""
    store = get_store()
    active = store.active_ids()
    if not active:
        return 0
    still = set(
        Campaign.objects.filter(pk__in=active, status__in=ACTIVE_STATUSES).values_list("id", flat=True)
    )
    for campaign_id in active - still:
        store.stop(campaign_id)
    return len(active - still)


def delete_expired_results(now=None) -> int:
    """Delete ended campaigns (and their results) older than the retention period."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.LIVE_QUERY["RETENTION_DAYS"])
    try:
        deleted, _ = (
            Campaign.objects.filter(created_at__lt=cutoff).exclude(status__in=ACTIVE_STATUSES).delete()
        )
    except DatabaseError:
        logger.warning("could not delete old campaigns", exc_info=True)
        return 0
    return deleted
