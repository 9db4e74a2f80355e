"""The agent-update repository on disk: what ``manage.py updates``, the beat task and the console use.

Two directories, as ``fleetctl updates`` keeps them: ``keys/`` (the encrypted signing keys,
owner-only, never served) and ``repository/`` (what ``/tuf/`` serves: ``root.json`` and
``N.root.json``, ``targets.json``, ``snapshot.json``, ``timestamp.json`` and
``targets/<name>/<platform>/<channel>/<file>``). Settings name both (``AGENT_UPDATES``), so the
keys can live on an operator's machine or a mounted secret while the repository is a volume or
a synced bucket.

Every change happens under an exclusive file lock and each file is replaced atomically, so a
client never reads half a file and two writers (an operator's ``add`` and the beat's timestamp
refresh) never interleave. Order matters for clients that read while we write: target files
first, then targets, snapshot and, last, the timestamp that makes the new set visible.
Passphrases are asked for (and checked, by decrypting the key) before anything is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError

from updates import keys, naming
from updates import tuf_metadata as tm

PassphraseLookup = Callable[[str], str]  # role -> passphrase (may prompt, may raise)
_ADD_ROLES = (Targets.type, Snapshot.type, Timestamp.type)  # the keys ``add`` signs with


class RepositoryError(Exception):
    """A problem to report to the operator as it is (no traceback)."""


class NotInitialised(RepositoryError):
    pass


class AlreadyInitialised(RepositoryError):
    pass


@dataclass(frozen=True)
class NewTarget:
    """One file to publish: under its version and each tag (channel) given."""

    name: str
    platform: str
    version: str
    tags: tuple[str, ...] = ()
    source: Path | None = None  # a file to copy...
    data: bytes | None = None  # ...or its bytes (the demo's generated files)
    source_name: str = ""  # decides the suffix (.exe, .app.tar.gz, .pkg) when ``data`` is given

    def channels(self) -> list[str]:
        """The version itself first (so a host can pin it), then the tags, each once."""
        return list(dict.fromkeys((self.version, *self.tags)))

    def validate(self) -> None:
        naming.check_component(self.name)
        naming.check_platform(self.platform)
        naming.check_segment(self.version, "version")
        for tag in self.tags:
            naming.check_segment(tag, "tag")
        if self.source is not None and not Path(self.source).is_file():
            raise ValueError(f"target file {self.source} does not exist or is not a regular file")
        if (self.source is None) == (self.data is None):
            raise ValueError("give either a source file or its data")

    def filename(self) -> str:
        source_name = self.source.name if self.source is not None else self.source_name
        return naming.target_filename(self.name, self.platform, source_name)


@dataclass(frozen=True)
class TargetEntry:
    """A target as the console and ``updates list`` show it."""

    path: str
    name: str
    platform: str
    channel: str
    filename: str
    version: str
    length: int
    sha256: str


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime


@dataclass
class UpdateRepository:
    repository_dir: Path
    keys_dir: Path
    scrypt_n: int = keys.DEFAULT_SCRYPT_N
    _signers: dict[str, Signer] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls) -> UpdateRepository:
        config = settings.AGENT_UPDATES
        return cls(
            repository_dir=Path(config["REPOSITORY_DIR"]),
            keys_dir=Path(config["KEYS_DIR"]),
            scrypt_n=int(config.get("KEY_SCRYPT_N", keys.DEFAULT_SCRYPT_N)),
        )

    # --- reading ---------------------------------------------------------------------------------
    def metadata_path(self, role: str) -> Path:
        return self.repository_dir / f"{role}.json"

    def is_initialised(self) -> bool:
        return self.metadata_path(Root.type).is_file()

    def _require_initialised(self) -> None:
        if not self.is_initialised():
            raise NotInitialised(
                f"no update repository in {self.repository_dir}: run `manage.py updates init` first"
            )

    def _read(self, role: str) -> tuple[bytes, Metadata]:
        path = self.metadata_path(role)
        try:
            data = path.read_bytes()
            return data, tm.load(data)
        except FileNotFoundError:
            raise RepositoryError(f"{path} is missing: the repository is incomplete") from None
        except DeserializationError as exc:
            raise RepositoryError(f"{path} is not valid TUF metadata: {exc}") from None

    def root_bytes(self) -> bytes:
        """The signed root metadata clients must be given to trust this repository."""
        self._require_initialised()
        return self.metadata_path(Root.type).read_bytes()

    def targets(self) -> list[TargetEntry]:
        self._require_initialised()
        _, metadata = self._read(Targets.type)
        entries = []
        for path, target in metadata.signed.targets.items():
            parts = naming.split_target_path(path)
            if parts is None:
                continue
            name, platform, channel, filename = parts
            entries.append(
                TargetEntry(
                    path=path,
                    name=name,
                    platform=platform,
                    channel=channel,
                    filename=filename,
                    version=tm.custom_version(target),
                    length=target.length,
                    sha256=target.hashes.get("sha256", ""),
                )
            )
        return sorted(entries, key=lambda e: (e.name, e.platform, e.channel))

    def roles(self) -> list[RoleStatus]:
        self._require_initialised()
        statuses = []
        for role in tm.TOP_LEVEL_ROLES:
            _, metadata = self._read(role)
            statuses.append(RoleStatus(role, metadata.signed.version, metadata.signed.expires))
        return statuses

    def timestamp_expires(self) -> datetime:
        self._require_initialised()
        return self._read(Timestamp.type)[1].signed.expires

    # --- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive between writers. The lock file is in the repository directory, the one place
        every writer may write (the keys may be a read-only secret mount); it is never served."""
        self.repository_dir.mkdir(parents=True, exist_ok=True)
        with open(self.repository_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)

    def _copy(self, source: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)

    def _signer(self, role: str, passphrases: PassphraseLookup, root: Root) -> Signer:
        """The role's signer, its key checked against the one root.json trusts."""
        if role not in self._signers:
            signer = keys.load_signer(self.keys_dir, role, passphrases(role))
            if signer.public_key.keyid not in root.roles[role].keyids:
                raise RepositoryError(
                    f"the {role} key in {self.keys_dir} is not the one {self.metadata_path('root')} trusts"
                )
            self._signers[role] = signer
        return self._signers[role]

    def init(self, passphrases: PassphraseLookup) -> dict[str, str]:
        """Generate the four keys and commit empty, signed metadata. Returns role -> key id."""
        if self.is_initialised():
            raise AlreadyInitialised(f"an update repository already exists in {self.repository_dir}")
        existing = [keys.key_file(self.keys_dir, role) for role in keys.ROLES]
        if any(path.exists() for path in existing):
            raise AlreadyInitialised(
                f"signing keys already exist in {self.keys_dir}; refusing to replace them"
            )
        chosen = {role: passphrases(role) for role in keys.ROLES}  # all asked before anything is written
        for role, passphrase in chosen.items():
            if not passphrase:
                raise keys.WrongPassphrase(f"the {role} passphrase must not be empty", role)
        private = {role: keys.generate() for role in keys.ROLES}
        with self._locked():
            public = {
                role: keys.write_key(self.keys_dir, role, private[role], chosen[role], scrypt_n=self.scrypt_n)
                for role in keys.ROLES
            }
            signers = {role: CryptoSigner(private[role], public[role]) for role in keys.ROLES}
            now = tm.utcnow()
            root_bytes = tm.signed_bytes(tm.new_root(public, now), signers[Root.type])
            targets_bytes = tm.signed_bytes(tm.new_targets(now), signers[Targets.type])
            snapshot = tm.snapshot_for(targets_bytes, 1, 1, now)
            snapshot_bytes = tm.signed_bytes(snapshot, signers[Snapshot.type])
            timestamp = tm.timestamp_for(snapshot_bytes, 1, 1, now)
            timestamp_bytes = tm.signed_bytes(timestamp, signers[Timestamp.type])
            (self.repository_dir / "targets").mkdir(parents=True, exist_ok=True)
            self._write(self.repository_dir / "1.root.json", root_bytes)
            self._write(self.metadata_path(Targets.type), targets_bytes)
            self._write(self.metadata_path(Snapshot.type), snapshot_bytes)
            self._write(self.metadata_path(Timestamp.type), timestamp_bytes)
            self._write(self.metadata_path(Root.type), root_bytes)  # last: it marks "initialised"
        return {role: key.keyid for role, key in public.items()}

    def add_targets(self, new: Sequence[NewTarget], passphrases: PassphraseLookup) -> list[str]:
        """Publish files under each of their channels; re-sign targets, snapshot and timestamp.

        Returns the target paths written.
        """
        for target in new:
            target.validate()
        self._require_initialised()
        root = self._read(Root.type)[1].signed
        signers = {role: self._signer(role, passphrases, root) for role in _ADD_ROLES}
        written: list[str] = []
        with self._locked():
            _, targets = self._read(Targets.type)
            for target in new:
                for channel in target.channels():
                    path = naming.target_path(target.name, target.platform, channel, target.filename())
                    destination = self.repository_dir / "targets" / path
                    if target.data is not None:
                        self._write(destination, target.data)
                    else:
                        self._copy(Path(target.source), destination)
                    targets.signed.targets[path] = tm.target_file(
                        path, target.version, data=target.data, local_path=str(destination)
                    )
                    written.append(path)
            self._commit_targets(targets, signers)
        return written

    def _commit_targets(self, targets: Metadata, signers: dict[str, Signer]) -> None:
        now = tm.utcnow()
        targets.signed.version += 1
        targets.signed.expires = tm.expires_for(Targets.type, now)
        targets_bytes = tm.signed_bytes(targets, signers[Targets.type])
        old_snapshot = self._read(Snapshot.type)[1].signed
        snapshot = tm.snapshot_for(targets_bytes, targets.signed.version, old_snapshot.version + 1, now)
        snapshot_bytes = tm.signed_bytes(snapshot, signers[Snapshot.type])
        old_timestamp = self._read(Timestamp.type)[1].signed
        timestamp = tm.timestamp_for(snapshot_bytes, snapshot.signed.version, old_timestamp.version + 1, now)
        self._write(self.metadata_path(Targets.type), targets_bytes)
        self._write(self.metadata_path(Snapshot.type), snapshot_bytes)
        timestamp_bytes = tm.signed_bytes(timestamp, signers[Timestamp.type])
        self._write(self.metadata_path(Timestamp.type), timestamp_bytes)

    def refresh_timestamp(
        self,
        passphrase: str | PassphraseLookup,
        *,
        expires: datetime | None = None,
        unless_valid_for: timedelta | None = None,
    ) -> RoleStatus:
        """Re-sign timestamp.json (new version, new expiry) over the current snapshot.

        ``unless_valid_for``: leave it alone if it is still valid that long (checked under the
        lock, so of two refreshers racing, the second does nothing). ``expires`` overrides the
        14 days (tests use it to make an already-expired timestamp).
        """
        self._require_initialised()
        root = self._read(Root.type)[1].signed
        source = passphrase if callable(passphrase) else (lambda role: passphrase)
        signer = self._signer(Timestamp.type, source, root)
        with self._locked():
            snapshot_bytes, snapshot = self._read(Snapshot.type)
            old = self._read(Timestamp.type)[1].signed
            if unless_valid_for is not None and old.expires - tm.utcnow() > unless_valid_for:
                return RoleStatus(Timestamp.type, old.version, old.expires)
            timestamp = tm.timestamp_for(
                snapshot_bytes, snapshot.signed.version, old.version + 1, expires=expires
            )
            self._write(self.metadata_path(Timestamp.type), tm.signed_bytes(timestamp, signer))
        return RoleStatus(Timestamp.type, timestamp.signed.version, timestamp.signed.expires)

    def change_passphrase(self, role: str, old: str, new: str) -> None:
        if role not in keys.ROLES:
            raise ValueError(f"unknown role {role!r}: use one of {', '.join(keys.ROLES)}")
        if not new:
            raise keys.WrongPassphrase(f"the new {role} passphrase must not be empty", role)
        keys.change_passphrase(self.keys_dir, role, old, new, scrypt_n=self.scrypt_n)
