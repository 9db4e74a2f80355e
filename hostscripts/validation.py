"""What a script may contain, checked as Fleet checks it (``server/fleet/scripts.go``).

Saved scripts may hold up to 500,000 characters, ad-hoc ones 10,000; the contents must be text
(valid UTF-8, no NUL); a shell script's shebang, when there is one, must name ``/bin/sh`` or
``/bin/zsh`` (what orbit runs them with); names end in ``.sh`` or ``.ps1`` and choose the
platforms a script may run on.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

MAX_SAVED_CHARS = 500_000
MAX_ADHOC_CHARS = 10_000
MAX_NAME_CHARS = 255
_SHEBANG = re.compile(r"^#!\s*/bin/(sh|zsh)(\s.*)?$")
_NAME = re.compile(r"^[^/\\\x00-\x1f]+\.(sh|ps1)$", re.IGNORECASE)
WINDOWS_PLATFORMS = frozenset({"windows"})


def validate_contents(contents: object, *, saved: bool) -> str:
    """The contents, or a :class:`ValidationError` with the message Fleet would give."""
    if not isinstance(contents, str) or not contents.strip():
        raise ValidationError("Script contents must not be empty.")
    limit = MAX_SAVED_CHARS if saved else MAX_ADHOC_CHARS
    if len(contents) > limit:
        raise ValidationError(
            f"Script is too large. It's limited to {limit:,} characters "
            f"({'saved scripts' if saved else 'scripts run without saving'})."
        )
    try:
        contents.encode("utf-8")  # lone surrogates (from JSON escapes) are not text
    except UnicodeEncodeError:
        raise ValidationError("Wrong data format. Only plain text allowed.") from None
    if "\x00" in contents:
        raise ValidationError("Wrong data format. Only plain text allowed.")
    if contents.startswith("#!"):
        first_line = contents.split("\n", 1)[0].rstrip("\r")
        if not _SHEBANG.match(first_line):
            raise ValidationError(
                'Interpreter not supported. Shell scripts must run in "#!/bin/sh" or "#!/bin/zsh".'
            )
    return contents


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("The script needs a name.")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError(f"Script names are limited to {MAX_NAME_CHARS} characters.")
    if not _NAME.match(name):
        raise ValidationError(
            "File type not supported. Only .sh (macOS, Linux) and .ps1 (Windows) files are allowed."
        )
    return name


def is_powershell(name: str) -> bool:
    return name.lower().endswith(".ps1")


def script_fits_platform(name: str, platform: str) -> bool:
    """A ``.ps1`` runs on Windows only, a ``.sh`` everywhere else (macOS and Linux)."""
    return is_powershell(name) == (platform in WINDOWS_PLATFORMS)
