"""Waking devices through APNs, and keeping what happened where admins can see it.

Each device row keeps its last push time and error, and a failure count that a success resets;
the console's MDM page lists the failing devices. Pushes never raise into the caller: a device
that was not woken still finds its commands at its next check-in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db.models import F
from django.utils import timezone

from mdm import push_certificate
from mdm.apns.client import ApnsClient, PushTarget
from mdm.models import Enrollment

logger = logging.getLogger(__name__)


def push_enrollments(enrollment_ids: Iterable[int]) -> dict[str, int]:
    """Push every enrolled device among ``enrollment_ids``; returns ``{"sent", "failed"}`` counts."""
    devices = list(
        Enrollment.objects.filter(pk__in=list(enrollment_ids), enrolled=True)
        .exclude(push_token="")
        .exclude(push_magic="")
        .only("pk", "push_token", "push_magic")
    )
    if not devices:
        return {"sent": 0, "failed": 0}
    material = push_certificate.material()
    now = timezone.now()
    if material is None:
        Enrollment.objects.filter(pk__in=[d.pk for d in devices]).update(
            last_push_at=now, last_push_error="no APNs certificate", push_failures=F("push_failures") + 1
        )
        return {"sent": 0, "failed": len(devices)}
    by_token = {d.push_token: d for d in devices}
    with ApnsClient(
        base_url=material.url,
        cert_pem=material.cert_pem,
        key_pem=material.key_pem,
        topic=material.topic,
        ca_file=material.ca_file,
        timeout=5.0,
    ) as client:
        outcomes = client.push([PushTarget(d.push_token, d.push_magic) for d in devices])
    sent = [by_token[o.token_hex].pk for o in outcomes if o.ok and o.token_hex in by_token]
    if sent:
        Enrollment.objects.filter(pk__in=sent).update(last_push_at=now, last_push_error="", push_failures=0)
    failed = [o for o in outcomes if not o.ok and o.token_hex in by_token]
    for outcome in failed:
        reason = (f"{outcome.status} {outcome.reason}" if outcome.status else outcome.reason)[:255]
        Enrollment.objects.filter(pk=by_token[outcome.token_hex].pk).update(
            last_push_at=now, last_push_error=reason, push_failures=F("push_failures") + 1
        )
    if failed:
        logger.warning(
            "APNs: %d of %d pushes failed (first: %s)", len(failed), len(outcomes), failed[0].reason
        )
    return {"sent": len(sent), "failed": len(failed)}
