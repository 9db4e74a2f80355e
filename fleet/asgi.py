"""ASGI entry point: daphne serves WebSockets in production, and everything under ``make run``."""

import os

from django.core.asgi import get_asgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)

# Django must be set up before anything imports models (consumers, routing).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from fleet.daphne_compat import hand_form_bodies_to_django  # noqa: E402
from fleet.routing import websocket_urlpatterns  # noqa: E402
from fleet.ws_auth import WebSocketAuthStack  # noqa: E402

hand_form_bodies_to_django()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": WebSocketAuthStack(URLRouter(websocket_urlpatterns)),
    }
)
