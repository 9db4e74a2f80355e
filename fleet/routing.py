"""WebSocket URL patterns, collected from the apps that serve WebSockets."""

websocket_urlpatterns: list = []
