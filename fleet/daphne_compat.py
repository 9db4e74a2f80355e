"""Make daphne hand every request body to Django, malformed form bodies included.

Twisted, under daphne, parses ``multipart/form-data`` and urlencoded POST bodies itself before
the application runs, and answers a malformed multipart body (no boundary, a wrong one) with an
empty ``400`` and a closed connection. osquery reads an empty reply as success and drops the logs
it sent. Django parses forms itself when a view asks, so Twisted's parse is only a cost here:
this turns it off, through the ``parsePOSTFormSubmission`` switch Twisted's requests take.
"""

from __future__ import annotations


def hand_form_bodies_to_django() -> None:
    """Have daphne's requests skip Twisted's form parsing (a no-op where daphne is absent)."""
    try:
        from daphne import http_protocol
    except ImportError:  # another ASGI server
        return
    if getattr(http_protocol.WebRequest, "_fleet_forms_to_django", False):
        return

    class WebRequestWithoutFormParsing(http_protocol.WebRequest):
        _fleet_forms_to_django = True

        def __init__(self, *args, **kwargs) -> None:
            kwargs["parsePOSTFormSubmission"] = False
            super().__init__(*args, **kwargs)

    http_protocol.WebRequest = WebRequestWithoutFormParsing
