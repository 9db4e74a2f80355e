"""Reading ids from text that anyone may have written (agents, query strings).

``str.isdigit()`` is true for "²" and for 5,000-digit strings, and ``int()`` refuses both (the
second since Python 3.11's digit limit): a check with ``isdigit`` then ``int`` is a 500 waiting
for the right input.
"""

from __future__ import annotations

import re

_ID = re.compile(r"[0-9]{1,18}")


def parse_id(text: str | None) -> int | None:
    """A database id written in ASCII digits (at most 18, so it fits 64 bits), else ``None``."""
    if text is None or not _ID.fullmatch(text):
        return None
    return int(text)
