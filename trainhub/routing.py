"""WebSocket routes of every app."""

from runs.routing import websocket_urlpatterns as runs_patterns

websocket_urlpatterns: list = [*runs_patterns]
