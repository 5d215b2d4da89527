"""WebSocket routes of every app."""

from metrics.routing import websocket_urlpatterns as metrics_patterns
from runs.routing import websocket_urlpatterns as runs_patterns

websocket_urlpatterns: list = [*runs_patterns, *metrics_patterns]
