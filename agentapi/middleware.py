"""Every error an agent gets is JSON with an ``error`` key, even when Django itself answered.

Some errors happen before an agent view runs: a Host header outside ``ALLOWED_HOSTS``, a path
that is not an endpoint, an exception in another middleware. Django answers those with HTML or
an empty body, which osquery takes for success (and then drops the logs it sent). This
middleware, the outermost, rewrites such replies on the agent paths.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from agentapi.errorlog import AGENT_PATH_PREFIXES
from agentapi.wire import AgentError, error_response


class AgentJsonErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(AGENT_PATH_PREFIXES)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            reason = response.reason_phrase or "error"
            replaced = error_response(AgentError(f"request refused: {reason}", status=response.status_code))
            if response.has_header("Allow"):
                replaced["Allow"] = response["Allow"]
            return replaced
        return response
