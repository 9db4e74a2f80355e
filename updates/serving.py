"""Which request paths under /tuf/ may be served, and how each kind of file is cached.

Only two shapes exist in a Fleet-style repository, and only they are served: top-level
metadata (``root.json``, ``3.root.json``, ``targets.json``, ``snapshot.json``,
``timestamp.json``) and files under ``targets/`` whose every segment is a safe name
(``updates.naming``). Anything else is a 404 before the disk is touched: ``..``, hidden files
(our temporary files and lock), backslashes, empty segments. What remains is resolved and must
still lie inside the repository (a symlink pointing out is refused) and be a regular file.

Caching: metadata changes without changing its name (the timestamp every few days, targets on
every ``add``), so caches must revalidate it every time (``no-cache`` with an ETag makes that a
cheap 304). Targets are the large files: caches may keep them a few minutes. Their channel
paths (``.../stable/orbit``) do get new content on ``add``; a client that fetched a stale copy
fails the hash check and simply retries at its next check, so a short lifetime bounds that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from updates.naming import is_safe_segment

_METADATA_NAME = re.compile(r"(?:[1-9][0-9]{0,8}\.)?(?:root|targets|snapshot|timestamp)\.json")
_MAX_PATH = 1024
TARGET_MAX_AGE = 300


class Kind(Enum):
    METADATA = "metadata"
    TARGET = "target"

    @property
    def content_type(self) -> str:
        return "application/json" if self is Kind.METADATA else "application/octet-stream"

    @property
    def cache_control(self) -> str:
        if self is Kind.METADATA:
            return "no-cache"
        return f"public, max-age={TARGET_MAX_AGE}"


@dataclass(frozen=True)
class ServedFile:
    path: Path
    kind: Kind


def kind_of(path: str) -> Kind | None:
    """The kind of a request path (relative to /tuf/), or ``None`` if it is never served."""
    if not path or len(path) > _MAX_PATH or "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if len(parts) == 1:
        return Kind.METADATA if _METADATA_NAME.fullmatch(parts[0]) else None
    if parts[0] == "targets" and all(is_safe_segment(part) for part in parts[1:]):
        return Kind.TARGET
    return None


def resolve(repository_dir: Path, path: str) -> ServedFile | None:
    """The file to send for ``path``, or ``None`` for a 404."""
    kind = kind_of(path)
    if kind is None:
        return None
    try:
        base = Path(repository_dir).resolve()
        candidate = (base / path).resolve()
        if not candidate.is_relative_to(base) or not candidate.is_file():
            return None
    except (OSError, RuntimeError):  # unreadable, or a symlink loop
        return None
    return ServedFile(candidate, kind)
