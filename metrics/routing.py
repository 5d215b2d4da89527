from django.urls import path

from metrics.consumers import RunMetricsConsumer

websocket_urlpatterns = [
    path("ws/runs/<str:run_id>/metrics/", RunMetricsConsumer.as_asgi()),  # type: ignore[arg-type]  # an ASGI app: django-stubs expects a view
]
