"""Django's 400 page, made useful: a console form too big to read says so, the API answers JSON.

A POST over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (say, megabytes pasted into a SQL box) makes Django
give up reading the request; the stock answer is a bare "Bad Request". In the console, people
get a page that says what happened and sends them back to their form (the browser keeps what
they typed); REST clients get ``{"detail": ...}`` like every other API error.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from agentapi.errorlog import OSQUERY_ORBIT_PREFIXES


def _explain(exception: Any) -> str:
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
        return f"The form you sent is larger than {limit:.1f} MB, so the server did not read it."
    if isinstance(exception, TooManyFieldsSent):
        return "The form you sent has too many fields, so the server did not read it."
    return "The server could not understand this request."


def bad_request(request: HttpRequest, exception: Any = None) -> HttpResponse:
    message = _explain(exception)
    if request.path.startswith(OSQUERY_ORBIT_PREFIXES):
        # Agents get their own JSON shape ({"error": ...}) from AgentJsonErrorsMiddleware.
        return HttpResponseBadRequest(message, content_type="text/plain")
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=400)
    referer = request.headers.get("Referer", "")
    try:
        host = request.get_host()
    except DisallowedHost:  # the very reason for this 400: asking again would raise a 500
        host = ""
    same_site = bool(host) and url_has_allowed_host_and_scheme(referer, {host})
    back = referer if same_site else reverse("admin:index")
    context = {"title": "Request not read", "message": message, "back": back, "site_header": "Fleet"}
    return TemplateResponse(request, "400.html", context, status=400).render()
