"""Run daphne on TRAINHUB_HOST:TRAINHUB_PORT (HTTP and WebSockets), once Redis answers."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEPT_FREE_BYTES = 128 * 1024 * 1024
MMAP_FROM_BYTES = 32 * 1024 * 1024


def keep_freed_memory() -> None:
    """Let malloc reuse the memory of freed request bodies instead of handing it back to the
    kernel at once: an upload chunk is pieces of up to 1 MB joined into 8 MB, and with glibc's
    defaults each of them came from fresh pages (a map, a page fault per 4 KB, an unmap), which
    cost ten times the copying itself (1.5 s against 0.16 s of CPU per GiB here). The heap keeps
    up to KEPT_FREE_BYTES free at its top; only allocations past MMAP_FROM_BYTES get maps of their own."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES)
    except (OSError, AttributeError):
        return  # not glibc: its allocator has its own ways


def main() -> None:
    keep_freed_memory()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")
    # Imported here: Django is set up once the settings module is named, and what follows needs it.
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
