"""Finding hosts (and other named things) from what people type: ids, hostnames, UUIDs, serials.

Shared by manual labels, pack targets in specs and live-query targets, so "a host named by its
serial" means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Q, QuerySet

from hosts.models import Host

_CHUNK = 2000  # identifiers per IN (...) list, well under SQLite's variable limit


def split_ids_and_names(identifiers: Iterable[Any]) -> tuple[set[int], set[str]]:
    """Integers and digit strings are ids; other non-empty strings are names (stripped)."""
    ids: set[int] = set()
    names: set[str] = set()
    for item in identifiers:
        if isinstance(item, int) and not isinstance(item, bool):
            ids.add(item)
        elif isinstance(item, str) and item.strip().isdigit() and item.strip().isascii():
            ids.add(int(item.strip()))
        elif isinstance(item, str) and item.strip():
            names.add(item.strip())
    return ids, names


def match_hosts(
    identifiers: Sequence[Any], hosts: QuerySet[Host] | None = None
) -> tuple[set[int], list[str]]:
    """The hosts (within ``hosts``) named by id, name, hostname, UUID or hardware serial, and the
    identifiers that named none. A name shared by several hosts names them all.

    The name is what the console shows (``computer_name``, e.g. ``dave-mbp``), the hostname what
    the agent reports (``dave-mbp.local``): people type either."""
    scope = Host.objects.all() if hosts is None else hosts
    ids, names = split_ids_and_names(identifiers)
    host_ids: set[int] = set()
    matched: set[str] = set()
    id_list, name_list = sorted(ids), sorted(names)
    for start in range(0, max(len(id_list), len(name_list)), _CHUNK):
        some_ids, some_names = id_list[start : start + _CHUNK], name_list[start : start + _CHUNK]
        found = scope.filter(
            Q(id__in=some_ids)
            | Q(hostname__in=some_names)
            | Q(computer_name__in=some_names)
            | Q(uuid__in=some_names)
            | Q(hardware_serial__in=some_names)
        ).values_list("id", "hostname", "computer_name", "uuid", "hardware_serial")
        for host_id, *names_of_host in found:
            if host_id in ids or names & set(names_of_host):
                host_ids.add(host_id)
                matched.update({str(host_id), *names_of_host})
    missing = [str(i).strip() for i in identifiers if str(i).strip() not in matched]
    return host_ids, missing
