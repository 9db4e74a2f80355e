"""Typed access to the environment, on top of django-environ.

Every setting the project reads from the environment goes through here, so the README's table
and the code cannot drift apart silently. ``NAME_FILE`` variables (Docker/Kubernetes secrets)
take precedence over ``NAME`` for secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

env = environ.Env()


def secret(name: str, default: str | None = None) -> str | None:
    """Read a secret from ``NAME_FILE`` (a mounted file) or ``NAME``; strip a trailing newline."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)
