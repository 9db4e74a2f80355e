"""What orbit does against /tuf/, in a few lines of python-tuf: for the host simulator and tests.

``check_for_updates`` refreshes the metadata as a TUF client must (root chain, timestamp,
snapshot, targets: signatures, versions, expiries, rollback) with python-tuf's reference
``ngclient``, then reads the ``custom.version`` of the targets asked for and, when asked,
downloads them, checked against their length and hashes. Metadata is kept in ``cache_dir``
between calls, so a second check detects a rollback, as orbit's ``tuf-metadata.json`` does.

Any failure is python-tuf's exception (``tuf.api.exceptions``: ``ExpiredMetadataError``,
``BadVersionNumberError``, ``LengthOrHashMismatchError``, ``DownloadError``...), never a
silently wrong answer.
"""

from __future__ import annotations

from pathlib import Path

from tuf.ngclient import Updater, UpdaterConfig

from updates import naming
from updates import tuf_metadata as tm


def target_path_for(component: str, platform: str, channel: str = naming.DEFAULT_CHANNEL) -> str:
    """The path orbit checks for a component, e.g. ``("orbit", "windows", "edge")`` ->
    ``orbit/windows/edge/orbit.exe``."""
    return naming.target_path(component, platform, channel, naming.agent_filename(component, platform))


def target_file(cache_dir: Path, target: str) -> Path:
    """Where ``check_for_updates(download=True)`` puts a target (``<cache>/targets/<path>``)."""
    return Path(cache_dir) / "targets" / target


def check_for_updates(
    base_url: str,
    root_json: bytes,
    cache_dir: Path,
    targets: list[str],
    *,
    download: bool = False,
) -> dict[str, str]:
    """The version in the repository of each target path asked for (those it has).

    ``base_url`` is the repository (``https://fleet.example.com/tuf``), ``root_json`` the root
    metadata the agent was packaged with (``manage.py updates roots``), ``targets`` paths such as
    ``orbit/linux/stable/orbit``. With ``download``, each is fetched into ``target_file()`` unless
    the copy there already has the right hashes.
    """
    base = base_url.rstrip("/")
    metadata_dir = Path(cache_dir) / "metadata"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    updater = Updater(
        metadata_dir=str(metadata_dir),
        metadata_base_url=f"{base}/",
        target_base_url=f"{base}/targets/",
        target_dir=str(Path(cache_dir) / "targets"),
        config=UpdaterConfig(prefix_targets_with_hash=False),  # Fleet: consistent_snapshot off
        # The root trusted last time, if any, as orbit keeps it; the packaged one the first time.
        bootstrap=None if (metadata_dir / "root.json").exists() else root_json,
    )
    updater.refresh()
    versions: dict[str, str] = {}
    for path in targets:
        info = updater.get_targetinfo(path)
        if info is None:
            continue
        versions[path] = tm.custom_version(info)
        if download:
            destination = target_file(cache_dir, path)
            if updater.find_cached_target(info, str(destination)) is None:
                destination.parent.mkdir(parents=True, exist_ok=True)
                updater.download_target(info, str(destination))
    return versions
