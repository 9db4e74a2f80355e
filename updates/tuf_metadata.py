"""The TUF metadata this repository writes, in one place (the wire format orbit reads).

Built with python-tuf's reference ``tuf.api.metadata`` classes, shaped the way Fleet's
repository is so that orbit's go-tuf client accepts it:

- ``consistent_snapshot`` off (python-tuf defaults it on): files keep their plain names;
- ed25519 keys, one per role, threshold 1;
- every target carries ``{"version": ...}`` as custom metadata, and sha256 and sha512 hashes
  with its length (orbit checks sha512); snapshot and timestamp entries carry the same;
- expiries as ``fleetctl updates``: root 10 years, targets and snapshot 3 years, timestamp
  14 days (hence the beat task that re-signs it).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

HASH_ALGORITHMS = ["sha256", "sha512"]
EXPIRY = {
    Root.type: timedelta(days=3650),
    Targets.type: timedelta(days=3 * 365),
    Snapshot.type: timedelta(days=3 * 365),
    Timestamp.type: timedelta(days=14),
}
TOP_LEVEL_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_SERIALIZER = JSONSerializer(compact=False)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def expires_for(role: str, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + EXPIRY[role]


def hashes_of(data: bytes) -> dict[str, str]:
    return {name: hashlib.new(name, data).hexdigest() for name in HASH_ALGORITHMS}


def meta_file(data: bytes, version: int) -> MetaFile:
    """The entry that pins one metadata file (in snapshot or timestamp): version, length, hashes."""
    return MetaFile(version=version, length=len(data), hashes=hashes_of(data))


def new_root(public_keys: dict[str, Key], now: datetime | None = None) -> Metadata[Root]:
    root = Root(version=1, expires=expires_for(Root.type, now), consistent_snapshot=False)
    for role, key in public_keys.items():
        root.roles[role] = Role(keyids=[], threshold=1)
        root.add_key(key, role)
    return Metadata(root)


def new_targets(now: datetime | None = None) -> Metadata[Targets]:
    return Metadata(Targets(version=1, expires=expires_for(Targets.type, now)))


def target_file(path: str, version: str, *, data: bytes | None = None, local_path: str = "") -> TargetFile:
    """A target entry for ``path`` from its bytes or from the copy at ``local_path`` (hashed as
    it is read, so a large binary is never held in memory)."""
    if data is not None:
        target = TargetFile.from_data(path, data, HASH_ALGORITHMS)
    else:
        target = TargetFile.from_file(path, local_path, HASH_ALGORITHMS)
    target.unrecognized_fields["custom"] = {"version": version}
    return target


def custom_version(target: TargetFile) -> str:
    """The ``custom.version`` Fleet puts on every target ("" when absent)."""
    custom: Any = target.custom
    version = custom.get("version") if isinstance(custom, dict) else None
    return version if isinstance(version, str) else ""


def snapshot_for(
    targets_bytes: bytes, targets_version: int, version: int, now: datetime | None = None
) -> Metadata[Snapshot]:
    return Metadata(
        Snapshot(
            version=version,
            expires=expires_for(Snapshot.type, now),
            meta={"targets.json": meta_file(targets_bytes, targets_version)},
        )
    )


def timestamp_for(
    snapshot_bytes: bytes,
    snapshot_version: int,
    version: int,
    now: datetime | None = None,
    expires: datetime | None = None,
) -> Metadata[Timestamp]:
    return Metadata(
        Timestamp(
            version=version,
            expires=expires or expires_for(Timestamp.type, now),
            snapshot_meta=meta_file(snapshot_bytes, snapshot_version),
        )
    )


def signed_bytes(metadata: Metadata, signer: Signer) -> bytes:
    """Sign (replacing older signatures) and serialise as the served file."""
    metadata.sign(signer, append=False)
    return metadata.to_bytes(_SERIALIZER)


def load(data: bytes) -> Metadata:
    return Metadata.from_bytes(data)
