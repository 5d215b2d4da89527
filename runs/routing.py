from django.urls import path

from runs.consumers import RunLogConsumer

websocket_urlpatterns = [
    path("ws/runs/<str:run_id>/logs/", RunLogConsumer.as_asgi()),  # type: ignore[arg-type]  # an ASGI app: django-stubs expects a view
]
