"""Library helpers the console and REST share beyond ``services.save_script``: uploads and deletion."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from activities import recording
from hostscripts.models import Script
from hostscripts.validation import MAX_SAVED_CHARS, validate_contents

_MAX_UPLOAD_BYTES = MAX_SAVED_CHARS * 4  # UTF-8 takes at most 4 bytes a character


def uploaded_text(upload: Any) -> str:
    """A script file's text; too big or not UTF-8 text raises the ``ValidationError`` that
    ``validate_contents`` gives for such contents, so every surface words it the same way."""
    if upload.size is not None and upload.size > _MAX_UPLOAD_BYTES:
        validate_contents("#" * (MAX_SAVED_CHARS + 1), saved=True)
    data = upload.read(_MAX_UPLOAD_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        validate_contents("\x00", saved=True)  # "only plain text allowed"
    raise ValidationError("The file could not be read.")  # pragma: no cover (both checks raise)


def delete_script(script: Script) -> None:
    """Delete a saved script and record ``deleted_script`` (Fleet's details). Queued and finished
    runs keep the contents they were given, so nothing already asked of a host changes."""
    team_name = script.team.name if script.team_id else None
    details = {"script_name": script.name, "team_id": script.team_id, "team_name": team_name}
    with transaction.atomic():
        recording.record("deleted_script", script, details=details)
        script.delete()
