"""A password hasher for the test suite: Django's PBKDF2 at one round instead of a million.

Hashing one password the production way costs about 0.4 s, and the suite makes a user with a
password in hundreds of tests. The hash keeps PBKDF2's format (``pbkdf2_sha256$1$...``), so a
server process the test starts, on the production hashers, still verifies it.
"""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class OneRoundPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2-SHA256 with one iteration: the same algorithm name, so either side reads the other."""

    iterations = 1
