"""Run daphne on TRAINHUB_HOST:TRAINHUB_PORT (HTTP and WebSockets), once Redis answers."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib
import os

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Request bodies of an upload chunk's size the heap keeps room for (the SDK has 3 chunks on their way).
CHUNKS_KEPT = 4


def keep_freed_memory(chunk_bytes: int) -> None:
    """Let malloc reuse the memory of freed request bodies instead of handing it back to the
    kernel at once: an upload chunk is pieces of up to 1 MB joined into one body, and with glibc's
    defaults each of them came from fresh pages (a map, a page fault per 4 KB, an unmap), which
    cost ten times the copying itself (1.5 s against 0.16 s of CPU per GiB here). The heap keeps
    the bodies of a few chunks free at its top; only allocations past a chunk get maps of their own."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(M_MMAP_THRESHOLD, max(32 * 1024 * 1024, chunk_bytes + 1024 * 1024))
        libc.mallopt(M_TRIM_THRESHOLD, max(128 * 1024 * 1024, CHUNKS_KEPT * chunk_bytes))
    except (OSError, AttributeError):
        return  # not glibc: its allocator has its own ways


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")
    # Imported here: Django is set up once the settings module is named, and what follows needs it.
    import django

    django.setup()
    from daphne.cli import CommandLineInterface
    from django.conf import settings

    keep_freed_memory(settings.TRAINHUB_UPLOAD_CHUNK_BYTES)

    from trainhub.ops import request_limits
    from trainhub.ops.redis_server import wait_for_redis

    wait_for_redis(settings.REDIS_URL)
    request_limits.install()
    # The application's modules, settings and URL patterns live as long as the process: frozen out
    # of the collector's view, its full collections walk only what requests leave behind (they
    # walked all of Django each time: a tenth of the server's CPU in an upload).
    importlib.import_module("trainhub.asgi")
    gc.freeze()
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
