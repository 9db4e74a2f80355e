"""Keep device tokens out of the logs: they are credentials, and they travel in URL paths.

Django logs the path of every 4xx and 5xx (``django.request``), of refused CSRF checks
(``django.security.csrf``) and, under runserver, of every request (``django.server``). Attached
to the handler, this filter rewrites any ``/device/<token>`` in a record's message to
``/device/[token]`` before it is written, whichever logger the record came from.
"""

from __future__ import annotations

import logging
import re

_TOKEN_IN_PATH = re.compile(r"(/device/)[^/\s?\"']+")


def redact(text: str) -> str:
    return _TOKEN_IN_PATH.sub(r"\1[token]", text)


class RedactDeviceTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the formatter to report
            return True
        if "/device/" in message:
            record.msg, record.args = redact(message), None
        return True
