"""Run daphne on TRAINHUB_HOST:TRAINHUB_PORT (HTTP and WebSockets), once Redis answers."""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")
    import django

    django.setup()
    from daphne.cli import CommandLineInterface
    from django.conf import settings

    from trainhub.ops import request_limits
    from trainhub.ops.redis_server import wait_for_redis

    wait_for_redis(settings.REDIS_URL)
    request_limits.install()
    # Behind a proxy, the client's address and scheme come from its X-Forwarded-* headers; without
    # one those headers are the client's own words, and sign-in throttling counts by the peer.
    proxy = ["--proxy-headers"] if settings.TRAINHUB_BEHIND_PROXY else []
    CommandLineInterface().run(
        [
            "--bind",
            settings.TRAINHUB_HOST,
            "--port",
            str(settings.TRAINHUB_PORT),
            *proxy,
            "trainhub.asgi:application",
        ]
    )


if __name__ == "__main__":
    main()
