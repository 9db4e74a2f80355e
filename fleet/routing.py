"""WebSocket URL patterns, collected from the apps that serve WebSockets."""

from campaigns.routing import websocket_urlpatterns as campaign_patterns
from taskserver.ws_urls import websocket_urlpatterns as task_agent_patterns

websocket_urlpatterns: list = [*campaign_patterns, *task_agent_patterns]
