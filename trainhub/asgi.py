"""ASGI entry point: HTTP through Django, WebSockets through Channels behind origin and auth checks."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")

import django  # noqa: E402

django.setup(set_prefix=False)

from trainhub.ops.flow_control import ResponseFlowControl, WideASGIHandler  # noqa: E402
from trainhub.ops.request_threads import KeptThreadsHandler  # noqa: E402


class WebHandler(KeptThreadsHandler, WideASGIHandler):
    """Requests in kept threads (their database connections kept), responses in wide messages."""


# Streamed downloads go out in big messages and wait for the socket to drain instead of piling up
# in memory.
django_app = ResponseFlowControl(WebHandler())

from endpoints.proxy import ScoringProxy  # noqa: E402

# Endpoints' scoring URL is answered before Django: it only checks a key and passes bytes on.
http_app = ScoringProxy(django_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from trainhub.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
