"""A small demo update repository for ``make run``: something for orbit (and the simulator) to fetch.

On the embedded default only, ``ensure_demo_repository`` creates the repository with fixed,
public passphrases and publishes tiny generated files for orbit, osqueryd and Fleet Desktop on
Linux, macOS and Windows, in ``stable`` and ``edge`` with different versions. It never touches a
repository it did not create, and never runs against production settings. The keys are marked
as demo keys (a ``DEMO`` file beside them), which lets the embedded server re-sign the demo
timestamp by itself; their passphrases are public, so they must never sign anything real.

It is cheap (a cheap key derivation, tiny files, one signing pass: well under a second) and
idempotent: a second call only re-signs the timestamp if it is about to expire.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from updates import keys
from updates.repository import NewTarget, UpdateRepository

DEMO_PASSPHRASES = {role: f"demo-{role}-passphrase" for role in keys.ROLES}
DEMO_MARKER = "DEMO"
DEMO_SCRYPT_N = 2**10  # the passphrases are public: a costly derivation would protect nothing
# Versions per channel, as a simulator may report them.
DEMO_VERSIONS = {
    "stable": {"orbit": "1.38.1", "osqueryd": "5.14.1", "desktop": "1.38.1"},
    "edge": {"orbit": "1.39.0", "osqueryd": "5.15.0", "desktop": "1.39.0"},
}
# (component, repository platform, the file name a real build would have)
_DEMO_FILES = [
    ("orbit", "linux", "orbit"),
    ("orbit", "macos", "orbit"),
    ("orbit", "windows", "orbit.exe"),
    ("osqueryd", "linux", "osqueryd"),
    ("osqueryd", "macos-app", "osqueryd.app.tar.gz"),
    ("osqueryd", "windows", "osqueryd.exe"),
    ("desktop", "linux", "desktop.tar.gz"),
    ("desktop", "macos", "desktop.app.tar.gz"),
    ("desktop", "windows", "fleet-desktop.exe"),
]


def is_demo_repository(repository: UpdateRepository) -> bool:
    return (repository.keys_dir / DEMO_MARKER).is_file()


def demo_targets() -> list[NewTarget]:
    return [
        NewTarget(
            name=name,
            platform=platform,
            version=versions[name],
            tags=(channel,),
            data=f"demo {name} {versions[name]} for {platform} ({channel})\n".encode(),
            source_name=filename,
        )
        for channel, versions in DEMO_VERSIONS.items()
        for name, platform, filename in _DEMO_FILES
    ]


def ensure_demo_repository(repository: UpdateRepository | None = None) -> str:
    """Create the demo repository if there is none (embedded default only); says what it did."""
    if repository is None:
        if not settings.EMBEDDED:
            return "skipped: the demo update repository is only for the embedded default"
        repository = UpdateRepository.from_settings()
    repository.scrypt_n = DEMO_SCRYPT_N

    def passphrase(role: str) -> str:
        return DEMO_PASSPHRASES[role]

    if repository.is_initialised():
        if not is_demo_repository(repository):
            return f"kept the update repository in {repository.repository_dir} (not a demo one)"
        if not repository.targets():
            repository.add_targets(demo_targets(), passphrase)
            return f"published the demo agent updates in {repository.repository_dir}"
        status = repository.refresh_timestamp(passphrase, unless_valid_for=timedelta(days=7))
        return f"demo update repository ready (timestamp valid until {status.expires:%Y-%m-%d})"
    repository.init(passphrase)
    (repository.keys_dir / DEMO_MARKER).write_text(
        "These keys are sealed with public demo passphrases (updates/demo.py): never sign real updates.\n"
    )
    repository.add_targets(demo_targets(), passphrase)
    expires = repository.timestamp_expires()
    return (
        f"created the demo update repository in {repository.repository_dir} (valid until {expires:%Y-%m-%d})"
    )
