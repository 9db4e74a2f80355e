"""WebSocket URL patterns, collected from the apps that serve WebSockets."""

from campaigns.routing import websocket_urlpatterns as campaign_patterns

websocket_urlpatterns: list = [*campaign_patterns]
