"""The one write path for configuration profiles: create, replace, delete, batch-set, resend.

Every surface (REST, console, specs) goes through here, so the rules are in one place and each
change is in the audit trail once (``created_macos_profile``, ``edited_macos_profile``,
``deleted_macos_profile``, ``resent_configuration_profile``, with Fleet's detail keys). After a
change the reconciler is asked to run once the transaction commits; it is what turns profiles
into commands for devices (:mod:`mdm.profiles.reconciler`).

Uniqueness is per team ("no team" being one more scope): a profile's identifier and its name.
Two teams may share an identifier, as Fleet allows. The database enforces both too, so a lost
race becomes the same 409 as a check that caught it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from activities import recording
from fleet.numbers import parse_id
from hosts.labels import UnknownLabelsError, find_labels
from hosts.models import Host, Label, Team
from mdm import commands, queue
from mdm.models import (
    Enrollment,
    HostProfile,
    Profile,
    ProfileOperation,
    ProfileStatus,
    new_uuid,
)
from mdm.profiles import reconciler
from mdm.profiles.validation import ParsedProfile, ProfileError, parse

LABEL_MODES = ("include_all", "include_any", "exclude_any")
CONFLICT = 409
MAX_LABELS = 100
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class LabelScope:
    """A profile's label mode (``""``: every host of its team) and the labels of that mode."""

    mode: str = ""
    labels: tuple[Label, ...] = ()

    def kwargs(self) -> dict[str, list[Label]]:
        return {f"labels_{mode}": list(self.labels) if mode == self.mode else [] for mode in LABEL_MODES}


@dataclass(frozen=True)
class BatchItem:
    """One profile of a batch: its contents, and optionally a label scope."""

    name: str
    data: bytes
    labels_include_all: Sequence[Any] = ()
    labels_include_any: Sequence[Any] = ()
    labels_exclude_any: Sequence[Any] = ()


@dataclass
class BatchResult:
    created: list[Profile] = field(default_factory=list)
    updated: list[Profile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # identifiers
    unchanged: list[Profile] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


# --- helpers ------------------------------------------------------------------------------------


def resolve_team(team: Team | int | None) -> Team | None:
    """A team (or ``None`` for no team) from a team or an id; 0 is no team."""
    if team is None or isinstance(team, Team):
        return team
    if not team:
        return None
    found = Team.objects.filter(pk=team).first()
    if found is None:
        raise ProfileError(f"No team with id {team}.", field="team_id")
    return found


def _unknown(values: Iterable[Any]) -> ProfileError:
    shown = ", ".join(str(v)[:100] for v in list(values)[:20])
    return ProfileError(f"Unknown label(s): {shown}.", field="labels")


def _labels(values: Iterable[Any]) -> list[Label]:
    """Labels given as labels, ids or names; an unknown one (or an id out of range) is refused."""
    values = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if not values:
        return []
    if len(values) > MAX_LABELS:
        raise ProfileError(f"A profile can be scoped by at most {MAX_LABELS} labels.", field="labels")
    labels = [v for v in values if isinstance(v, Label)]
    wanted: list[int | str] = []
    bad = []
    for value in values:
        if isinstance(value, Label):
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            bad.append(value)
        elif isinstance(value, int):
            (wanted if 0 < value <= MAX_ID else bad).append(value)
        elif value.strip().isascii() and value.strip().isdigit():
            parsed = parse_id(value.strip())
            (wanted if parsed else bad).append(parsed if parsed else value)
        else:
            wanted.append(value.strip())
    if bad:
        raise _unknown(bad)
    if wanted:
        try:
            labels.extend(find_labels(wanted))
        except UnknownLabelsError as exc:
            raise _unknown(str(exc).partition(": ")[2].split(", ")) from None
    return list({label.pk: label for label in labels}.values())


def label_scope(
    include_all: Iterable[Any] = (), include_any: Iterable[Any] = (), exclude_any: Iterable[Any] = ()
) -> LabelScope:
    """The label scope from the three lists (labels, ids or names); at most one may be given."""
    lists = {
        mode: [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
        for mode, values in zip(LABEL_MODES, (include_all, include_any, exclude_any), strict=True)
    }
    given = [mode for mode, values in lists.items() if values]
    if len(given) > 1:
        raise ProfileError(
            "Only one of labels_include_all, labels_include_any or labels_exclude_any can be given.",
            field="labels",
        )
    if not given:
        return LabelScope()
    mode = given[0]
    labels = _labels(lists[mode])
    return LabelScope(mode, tuple(sorted(labels, key=lambda label: label.pk)))


def _team_details(team_id: int | None) -> dict[str, Any]:
    name = Team.objects.filter(pk=team_id).values_list("name", flat=True).first() if team_id else None
    return {"team_id": team_id, "team_name": name}


def _profile_details(profile: Profile) -> dict[str, Any]:
    return {
        "profile_name": profile.name,
        "profile_identifier": profile.identifier,
        **_team_details(profile.team_id),
    }


def _check_unique(scope: int, parsed: ParsedProfile, exclude_pk: int | None = None) -> None:
    others = Profile.objects.filter(scope=scope)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    where = "this team" if scope else "no team"
    if others.filter(identifier=parsed.identifier).exists():
        raise ProfileError(
            f"A profile with identifier {parsed.identifier} already exists in {where}.", status=CONFLICT
        )
    if others.filter(name=parsed.name).exists():
        raise ProfileError(f"A profile named {parsed.name!r} already exists in {where}.", status=CONFLICT)


def _apply_labels(profile: Profile, scope: LabelScope) -> None:
    for name, labels in scope.kwargs().items():
        getattr(profile, name).set(labels)


def _current_scope(profile: Profile) -> LabelScope:
    from mdm.profiles.scope import label_mode

    mode, labels = label_mode(profile)
    return LabelScope(mode, tuple(sorted(labels, key=lambda label: label.pk)))


# --- create, replace, delete ---------------------------------------------------------------------


def check_new_profile(
    *,
    team: Team | int | None,
    data: bytes,
    labels_include_all: Iterable[Any] = (),
    labels_include_any: Iterable[Any] = (),
    labels_exclude_any: Iterable[Any] = (),
) -> tuple[Team | None, ParsedProfile, LabelScope]:
    """Everything :func:`create_profile` checks, without saving (the console form's ``clean``)."""
    team = resolve_team(team)
    parsed = parse(data)
    scope = label_scope(labels_include_all, labels_include_any, labels_exclude_any)
    _check_unique(team.pk if team else 0, parsed)
    return team, parsed, scope


def create_profile(
    *,
    team: Team | int | None,
    data: bytes,
    labels_include_all: Iterable[Any] = (),
    labels_include_any: Iterable[Any] = (),
    labels_exclude_any: Iterable[Any] = (),
    user: Any = None,
) -> Profile:
    """Save a new profile for ``team`` (``None``: no team); it reaches hosts through the reconciler."""
    team, parsed, scope = check_new_profile(
        team=team,
        data=data,
        labels_include_all=labels_include_all,
        labels_include_any=labels_include_any,
        labels_exclude_any=labels_exclude_any,
    )
    try:
        with transaction.atomic():
            profile = _save_new(team, parsed, scope)
            _record("created_macos_profile", profile, user=user, details=_profile_details(profile))
    except IntegrityError:  # a concurrent upload won the unique constraint
        raise ProfileError(
            f"A profile with identifier {parsed.identifier} or named {parsed.name!r} already exists.",
            status=CONFLICT,
        ) from None
    reconciler.request_reconcile()
    return profile


def _save_new(team: Team | None, parsed: ParsedProfile, scope: LabelScope) -> Profile:
    now = timezone.now()
    profile = Profile.objects.create(
        team=team,
        name=parsed.name,
        identifier=parsed.identifier,
        mobileconfig=parsed.data,
        checksum=parsed.checksum,
        created_at=now,
        updated_at=now,
    )
    _apply_labels(profile, scope)
    return profile


def _record(activity_type: str, obj: Any = None, *, user: Any = None, **kwargs: Any) -> None:
    """Record an activity; the actor is ``user`` when given, else whoever the acting context
    names (the request's user, the command's operator)."""
    if getattr(user, "is_authenticated", False):
        kwargs["actor"] = user
    recording.record(activity_type, obj, **kwargs)


def _update(profile: Profile, parsed: ParsedProfile, scope: LabelScope | None) -> bool:
    """Write new contents (and scope) onto ``profile``; ``False`` when nothing changed."""
    same_contents = parsed.checksum == profile.checksum and parsed.name == profile.name
    same_scope = scope is None or scope == _current_scope(profile)
    if same_contents and same_scope:
        return False
    if not same_contents:
        profile.name = parsed.name
        profile.mobileconfig = parsed.data
        profile.checksum = parsed.checksum
    profile.updated_at = timezone.now()
    profile.save(update_fields=["name", "mobileconfig", "checksum", "updated_at"])
    if scope is not None and not same_scope:
        _apply_labels(profile, scope)
    return True


def replace_profile(
    profile: Profile,
    data: bytes,
    *,
    labels_include_all: Iterable[Any] | None = None,
    labels_include_any: Iterable[Any] | None = None,
    labels_exclude_any: Iterable[Any] | None = None,
    user: Any = None,
) -> Profile:
    """New contents for a profile with the same identifier: its hosts get it again (pending).

    The label lists, when any is given, replace the scope; when all are ``None`` it is kept.
    """
    parsed = parse(data)
    if parsed.identifier != profile.identifier:
        raise ProfileError(
            f"The new profile's identifier {parsed.identifier} differs from {profile.identifier}: "
            "upload it as a new profile instead."
        )
    lists = (labels_include_all, labels_include_any, labels_exclude_any)
    scope = None if all(v is None for v in lists) else label_scope(*(v or () for v in lists))
    _check_unique(profile.scope, parsed, exclude_pk=profile.pk)
    try:
        with transaction.atomic():
            changed = _update(profile, parsed, scope)
            if changed:
                _record("edited_macos_profile", profile, user=user, details=_profile_details(profile))
    except IntegrityError:
        raise ProfileError(f"A profile named {parsed.name!r} already exists.", status=CONFLICT) from None
    if changed:
        reconciler.request_reconcile()
    return profile


def delete_profile(profile: Profile, user: Any = None) -> None:
    """Delete a profile; the reconciler then removes it from the hosts that have it."""
    with transaction.atomic():
        _record("deleted_macos_profile", profile, user=user, details=_profile_details(profile))
        profile.delete()
    reconciler.request_reconcile()


# --- batch -------------------------------------------------------------------------------------


def _batch_item(item: BatchItem | tuple) -> BatchItem:
    if isinstance(item, BatchItem):
        return item
    if isinstance(item, tuple | list) and len(item) == 2:
        return BatchItem(name=str(item[0]), data=item[1])
    raise ProfileError("Each profile of a batch is a (name, contents) pair.")


def batch_set(
    team: Team | int | None,
    profiles: Sequence[BatchItem | tuple[str, bytes]],
    user: Any = None,
    *,
    dry_run: bool = False,
) -> BatchResult:
    """Make ``team``'s profiles exactly ``profiles`` (Fleet's batch): profiles matched by
    identifier are replaced when their contents or labels changed, new ones created, the others
    deleted. All or nothing: the first invalid profile refuses the whole batch, naming it."""
    team = resolve_team(team)
    scope_id = team.pk if team else 0
    wanted: dict[str, tuple[ParsedProfile, LabelScope]] = {}
    names: dict[str, str] = {}
    for raw in profiles:
        item = _batch_item(raw)
        try:
            parsed = parse(item.data)
            scope = label_scope(item.labels_include_all, item.labels_include_any, item.labels_exclude_any)
        except ProfileError as exc:
            raise ProfileError(f"{item.name or 'A profile'}: {exc.message}", exc.status, exc.field) from None
        if parsed.identifier in wanted:
            raise ProfileError(f"The identifier {parsed.identifier} appears more than once in the batch.")
        if parsed.name in names:
            raise ProfileError(f"The name {parsed.name!r} appears more than once in the batch.")
        wanted[parsed.identifier] = (parsed, scope)
        names[parsed.name] = parsed.identifier
    result = BatchResult()
    existing = {p.identifier: p for p in Profile.objects.filter(scope=scope_id)}
    try:
        with transaction.atomic():
            for identifier, profile in existing.items():
                if identifier not in wanted:
                    result.deleted.append(identifier)
                    if not dry_run:
                        profile.delete()
            for identifier, (parsed, scope) in wanted.items():
                profile = existing.get(identifier)
                if profile is None:
                    if dry_run:
                        result.created.append(Profile(team=team, name=parsed.name, identifier=identifier))
                    else:
                        result.created.append(_save_new(team, parsed, scope))
                elif dry_run:
                    same = parsed.checksum == profile.checksum and scope == _current_scope(profile)
                    (result.unchanged if same else result.updated).append(profile)
                elif _update(profile, parsed, scope):
                    result.updated.append(profile)
                else:
                    result.unchanged.append(profile)
            if result.changed and not dry_run:
                _record(
                    "edited_macos_profile",
                    team,
                    user=user,
                    team=team.pk if team else None,
                    details={
                        **_team_details(team.pk if team else None),
                        "created": [p.identifier for p in result.created][:100],
                        "updated": [p.identifier for p in result.updated][:100],
                        "deleted": result.deleted[:100],
                    },
                )
    except IntegrityError:
        raise ProfileError(
            "The batch's names clash with each other while being applied; rename one and retry.",
            status=CONFLICT,
        ) from None
    if result.changed and not dry_run:
        reconciler.request_reconcile()
    return result


# --- resend ------------------------------------------------------------------------------------


def host_profile(host: Host, key: str) -> HostProfile | None:
    """The host's row for a profile named by identifier or by the profile's uuid."""
    rows = HostProfile.objects.filter(host=host).select_related("profile")
    return rows.filter(identifier=key).first() or rows.filter(profile__uuid=key).first()


def resend(host: Host, identifier: str, user: Any = None) -> HostProfile:
    """Send a profile to one host again (an admin's "Resend"): a new InstallProfile, pending.

    Any earlier command for it that the device has not answered is cancelled, so the device is
    not asked twice. Works in every status, stuck pending and verifying included (the complaint
    Fleet users have most: no way to push a stuck profile again).
    """
    row = host_profile(host, identifier)
    if row is None:
        raise ProfileError(f"The host has no profile {identifier}.", status=404)
    if row.operation != ProfileOperation.INSTALL or row.profile_id is None:
        raise ProfileError(
            "This profile is being removed from the host; it cannot be resent.", status=CONFLICT
        )
    enrollment = Enrollment.objects.filter(host=host, enrolled=True).first()
    if enrollment is None:
        raise ProfileError("The host is not enrolled in MDM.", status=CONFLICT)
    profile = row.profile
    command_uuid = new_uuid()
    now = timezone.now()
    with transaction.atomic():
        reconciler.cancel_unanswered([row.command_uuid])
        HostProfile.objects.filter(pk=row.pk).update(
            status=ProfileStatus.PENDING,
            checksum=profile.checksum,
            name=profile.name,
            command_uuid=command_uuid,
            detail="Resent by an admin.",
            retries=0,
            resends=row.resends + 1,
            updated_at=now,
        )
        queue.enqueue(
            enrollment,
            "InstallProfile",
            commands.install_profile(bytes(profile.mobileconfig)),
            user=user,
            command_uuid=command_uuid,
        )
        _record(
            "resent_configuration_profile",
            user=user,
            object_type="host",
            object_id=host.pk,
            object_name=host.display_name,
            team=host.team_id,
            details={
                "host_id": host.pk,
                "host_display_name": host.display_name,
                "profile_name": profile.name,
                "profile_identifier": profile.identifier,
            },
        )
    row.refresh_from_db()
    return row
