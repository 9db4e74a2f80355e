"""Celery task: deliver audit log lines a destination outage left behind (``activities.forwarding``).

Beat runs it every ``ACTIVITY_AUDIT_BACKLOG_INTERVAL`` seconds when audit forwarding is on. It is
safe to run on several workers at once: a line delivered twice is the at-least-once promise.
"""

from __future__ import annotations

from celery import shared_task

from activities import forwarding


@shared_task(name="activities.deliver_audit_backlog", ignore_result=True)
def deliver_audit_backlog() -> int:
    """Deliver waiting audit lines, oldest first; returns how many were delivered."""
    return forwarding.deliver_backlog()
