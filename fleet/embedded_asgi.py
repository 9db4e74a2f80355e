"""The embedded default's one application (``make run``, ``python -m fleet.embedded_server``): HTTP through
Django's WSGI handler (:mod:`fleet.wsgi_bridge`, at a WSGI server's cost per request) and WebSockets
through Channels, in one process, so the in-process channel layer, cache and live-query store
are shared by everything. Production runs ``fleet.wsgi`` under granian and ``fleet.asgi`` under
daphne instead (docs/architecture.md)."""

import gc
import os
from collections.abc import Callable

from django.core.wsgi import get_wsgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)

# Django must be set up before anything imports models (consumers, routing).
django_wsgi_app = get_wsgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from agentapi.direct import direct_agent_routes  # noqa: E402
from fleet import held_requests  # noqa: E402
from fleet.agent_admission import ShedReport  # noqa: E402
from fleet.request_metrics import ALL_AGENT_PREFIXES  # noqa: E402
from fleet.routing import websocket_urlpatterns  # noqa: E402
from fleet.ws_auth import WebSocketAuthStack  # noqa: E402
from fleet.wsgi_bridge import WSGIBridge  # noqa: E402

_shed_report = ShedReport("the server")

OSQUERY_PREFIXES = ("/api/osquery/", "/api/v1/osquery/")
LOG_PATHS = frozenset(prefix + "log" for prefix in OSQUERY_PREFIXES)


def inline_rule() -> Callable[[str], bool] | None:
    """Which requests run on the event loop's own thread (fleet/wsgi_bridge.py): osquery's, which
    only touch SQLite, the cache and local files, except log requests when a log destination is
    on the network (a slow webhook would stall the whole server). Orbit, Fleet Desktop and MDM may
    wait on the network (APNs pushes run in-process on the embedded default) and keep the agent
    threads. ``FLEET_INLINE_AGENT_REQUESTS=false`` puts osquery back on them too."""
    if not settings.EMBEDDED_INLINE_AGENT_REQUESTS:
        return None
    from packs.destinations import network_bound

    excluded = LOG_PATHS if network_bound() else frozenset()
    return lambda path: path.startswith(OSQUERY_PREFIXES) and path not in excluded


# REST calls that wait for agents hold a request thread each: half of them at most, so the console
# and the rest of the REST API always keep the other half.
held_requests.cap(settings.EMBEDDED_SERVER_THREADS // 2)

application = ProtocolTypeRouter(
    {
        "http": WSGIBridge(
            direct_agent_routes(django_wsgi_app),  # osquery's endpoints past Django's handler
            threads=settings.EMBEDDED_SERVER_THREADS,
            agent_threads=settings.EMBEDDED_AGENT_THREADS,
            agent_prefixes=ALL_AGENT_PREFIXES,
            inline=inline_rule(),
            shed_after=settings.EMBEDDED_SHED_AFTER,
            on_shed=_shed_report.shed,
        ),
        "websocket": WebSocketAuthStack(URLRouter(websocket_urlpatterns)),
    }
)

# Everything loaded so far (Django, the URL patterns, the models) lives as long as the process:
# out of the collector's reach, so a full collection does not walk it and stall the event loop
# that osquery's requests run on.
gc.freeze()
