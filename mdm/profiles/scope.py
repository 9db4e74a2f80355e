"""Which configuration profiles a host should have (Fleet's rules).

A host in a team gets that team's profiles only; a host in no team gets the "no team" profiles.
Each profile may narrow that with labels, in one of three modes:

- ``include_all``: the host is a member of every label;
- ``include_any``: of at least one;
- ``exclude_any``: of none. Until a host has reported its dynamic labels after such a label was
  created, its membership is unknown, and the profile waits rather than be installed on a host
  that may turn out to be excluded (Fleet does the same). Manual and builtin labels are known at
  once.

Cost: the profiles and their labels are read once (:meth:`Catalog.load`, five queries at most
whatever the number of hosts), then one query per batch of hosts for their memberships in the
labels that profiles use (none when no profile uses labels).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hosts.models import Host, Label, LabelMembership, LabelMembershipType, LabelType
from mdm.models import Profile


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What scoping needs to know about a host."""

    host_id: int
    team_id: int | None
    label_updated_at: datetime | None = None

    @classmethod
    def of(cls, host: Host) -> HostFacts:
        return cls(host.pk, host.team_id, host.label_updated_at)


@dataclass(frozen=True, slots=True)
class ScopedProfile:
    """A profile as scoping and the reconciler see it (no contents: they are read only to send)."""

    id: int
    uuid: str
    identifier: str
    name: str
    checksum: str
    scope: int  # team id, 0 for no team
    include_all: frozenset[int] = frozenset()
    include_any: frozenset[int] = frozenset()
    exclude_any: frozenset[int] = frozenset()

    @property
    def label_ids(self) -> frozenset[int]:
        return self.include_all | self.include_any | self.exclude_any


@dataclass
class Catalog:
    """Every profile of the scopes asked for, with its labels."""

    by_scope: dict[int, list[ScopedProfile]] = field(default_factory=dict)
    # Dynamic labels used by exclude_any -> when they were created (membership known after that).
    known_after: dict[int, datetime] = field(default_factory=dict)

    @property
    def label_ids(self) -> frozenset[int]:
        return frozenset(
            label_id for profiles in self.by_scope.values() for p in profiles for label_id in p.label_ids
        )

    @classmethod
    def load(cls, scopes: Collection[int] | None = None) -> Catalog:
        """The profiles of ``scopes`` (team ids, 0 for no team; ``None``: all of them)."""
        profiles = Profile.objects.all()
        if scopes is not None:
            profiles = profiles.filter(scope__in=list(scopes))
        rows = list(profiles.values_list("id", "uuid", "identifier", "name", "checksum", "scope"))
        if not rows:
            return cls()
        ids = [row[0] for row in rows]
        modes: dict[str, dict[int, set[int]]] = {}
        for mode in ("labels_include_all", "labels_include_any", "labels_exclude_any"):
            through = getattr(Profile, mode).through
            found: dict[int, set[int]] = defaultdict(set)
            pairs = through.objects.values_list("profile_id", "label_id")
            if scopes is not None:
                pairs = pairs.filter(profile_id__in=ids)
            for profile_id, label_id in pairs:
                found[profile_id].add(label_id)
            modes[mode] = found
        by_scope: dict[int, list[ScopedProfile]] = defaultdict(list)
        for pk, uuid, identifier, name, checksum, scope in rows:
            by_scope[scope].append(
                ScopedProfile(
                    id=pk,
                    uuid=uuid,
                    identifier=identifier,
                    name=name,
                    checksum=checksum,
                    scope=scope,
                    include_all=frozenset(modes["labels_include_all"].get(pk, ())),
                    include_any=frozenset(modes["labels_include_any"].get(pk, ())),
                    exclude_any=frozenset(modes["labels_exclude_any"].get(pk, ())),
                )
            )
        excluding = {label_id for found in modes["labels_exclude_any"].values() for label_id in found}
        known_after = {}
        if excluding:
            known_after = dict(
                Label.objects.filter(
                    pk__in=excluding,
                    label_type=LabelType.REGULAR,
                    label_membership_type=LabelMembershipType.DYNAMIC,
                ).values_list("pk", "created_at")
            )
        return cls(by_scope=dict(by_scope), known_after=known_after)

    def applies(self, profile: ScopedProfile, facts: HostFacts, member_of: Collection[int]) -> bool:
        """Whether ``profile`` (of the host's scope) is meant for this host."""
        if profile.include_all and not profile.include_all <= set(member_of):
            return False
        if profile.include_any and profile.include_any.isdisjoint(member_of):
            return False
        if profile.exclude_any:
            if not profile.exclude_any.isdisjoint(member_of):
                return False
            for label_id in profile.exclude_any:
                created = self.known_after.get(label_id)
                if created is not None and (
                    facts.label_updated_at is None or facts.label_updated_at < created
                ):
                    return False  # membership not reported since the label exists: wait
        return True

    def desired(self, hosts: Sequence[HostFacts]) -> dict[int, list[ScopedProfile]]:
        """Host id -> the profiles it should have (one membership query for all of them)."""
        memberships = self.memberships([h.host_id for h in hosts])
        result: dict[int, list[ScopedProfile]] = {}
        for facts in hosts:
            candidates = self.by_scope.get(facts.team_id or 0, ())
            member_of = memberships.get(facts.host_id, frozenset())
            result[facts.host_id] = [p for p in candidates if self.applies(p, facts, member_of)]
        return result

    def memberships(self, host_ids: Iterable[int]) -> dict[int, frozenset[int]]:
        """Host id -> the labels used by these profiles that it is a member of."""
        label_ids = self.label_ids
        host_ids = list(host_ids)
        if not label_ids or not host_ids:
            return {}
        found: dict[int, set[int]] = defaultdict(set)
        pairs = LabelMembership.objects.filter(host_id__in=host_ids, label_id__in=list(label_ids))
        for host_id, label_id in pairs.values_list("host_id", "label_id"):
            found[host_id].add(label_id)
        return {host_id: frozenset(labels) for host_id, labels in found.items()}


def profiles_for_host(host: Host) -> list[ScopedProfile]:
    """The profiles ``host`` should have, by its team and labels."""
    catalog = Catalog.load(scopes=[host.team_id or 0])
    return catalog.desired([HostFacts.of(host)])[host.pk]


def label_mode(profile: Profile) -> tuple[str, list[Label]]:
    """``("include_all" | "include_any" | "exclude_any" | "", labels)`` of one profile."""
    for mode in ("include_all", "include_any", "exclude_any"):
        labels = list(getattr(profile, f"labels_{mode}").all())
        if labels:
            return mode, labels
    return "", []
