"""ASGI entry point: HTTP through Django, WebSockets through Channels behind origin and auth checks."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

from trainhub.ops.flow_control import ResponseFlowControl  # noqa: E402

# Streamed downloads wait for the socket to drain instead of piling up in memory.
django_asgi_app = ResponseFlowControl(get_asgi_application())

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from trainhub.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
