"""ASGI entry point: daphne serves WebSockets in production, and everything under ``make run``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")

# Django must be set up before anything imports models (consumers, routing).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from fleet.routing import websocket_urlpatterns  # noqa: E402
from fleet.ws_auth import WebSocketAuthStack  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": WebSocketAuthStack(URLRouter(websocket_urlpatterns)),
    }
)
