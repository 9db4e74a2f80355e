"""The activity block of the console's host page (``hosts.host_page`` calls ``activities_for_host``)."""

from __future__ import annotations

from typing import Any

from activities.access import visible_activities
from activities.choices import ActivityType
from activities.models import Activity
from hosts.models import Host


def activities_for_host(host: Host, user: Any, limit: int = 20) -> list[Activity]:
    """What was done to this host, newest first, among the activities ``user`` may read.

    One indexed query (``activity_object``). Bulk actions on many hosts at once are one activity
    for all of them and appear in the activity feed, not here.
    """
    activities = Activity.objects.filter(object_type="host", object_id=str(host.pk))
    found = list(visible_activities(activities, user).order_by("-id")[: max(0, limit)])
    labels = dict(ActivityType.choices)
    for activity in found:
        activity.type_label = labels.get(activity.type, activity.type.replace("_", " "))
    return found
