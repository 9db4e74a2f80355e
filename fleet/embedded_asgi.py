"""The embedded default's one application (``make run``, ``python -m fleet.embedded_server``): HTTP through
Django's WSGI handler (:mod:`fleet.wsgi_bridge`, at gunicorn's cost per request) and WebSockets
through Channels, in one process, so the in-process channel layer, cache and live-query store
are shared by everything. Production runs ``fleet.wsgi`` under gunicorn and ``fleet.asgi`` under
daphne instead (docs/architecture.md)."""

import os

from django.core.wsgi import get_wsgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)

# Django must be set up before anything imports models (consumers, routing).
django_wsgi_app = get_wsgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from fleet.routing import websocket_urlpatterns  # noqa: E402
from fleet.ws_auth import WebSocketAuthStack  # noqa: E402
from fleet.wsgi_bridge import WSGIBridge  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": WSGIBridge(django_wsgi_app, threads=settings.EMBEDDED_SERVER_THREADS),
        "websocket": WebSocketAuthStack(URLRouter(websocket_urlpatterns)),
    }
)
