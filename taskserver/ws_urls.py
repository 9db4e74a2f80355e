"""The task agent's WebSocket path."""

from django.urls import path

from taskserver.consumers import AgentConsumer

websocket_urlpatterns = [path("ws/agent/", AgentConsumer.as_asgi())]
