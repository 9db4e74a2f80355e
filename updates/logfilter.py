"""Keep TUF clients' expected 404s out of the log.

Every orbit asks for the next root version (``/tuf/2.root.json``) at each check, every 15
minutes, and a 404 is the normal answer: TUF clients stop walking the root chain there. Django
logs each 4xx on ``django.request``, which would be one warning per host per check. Other
statuses and paths are left alone.
"""

from __future__ import annotations

import logging


class DropRepositoryNotFound(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        path = getattr(request, "path", "")
        return not (getattr(record, "status_code", None) == 404 and path.startswith("/tuf/"))
