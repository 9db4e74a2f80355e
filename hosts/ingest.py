"""Writing what a host reports about itself (detail queries) in one UPDATE per write."""

from __future__ import annotations

from django.utils import timezone

from hosts import details, nodekeys
from hosts.models import Host


def ingest_details(
    host_id: int, results: dict[str, list[dict[str, str]]], public_ip: str = ""
) -> Host | None:
    """Apply detail-query rows, mark details fresh, clear any refetch, refresh the cached state."""
    host = Host.objects.filter(id=host_id).first()
    if host is None:
        return None
    changed = details.ingest(host, results)
    if public_ip and host.public_ip != public_ip:
        host.public_ip = public_ip
        changed.append("public_ip")
    host.detail_updated_at = timezone.now()
    host.refetch_requested = False
    host.save(update_fields=[*changed, "detail_updated_at", "refetch_requested"])
    nodekeys.remember(host)
    return host
