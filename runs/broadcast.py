"""The single helper through which every live event reaches WebSocket viewers."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def run_group(run_pk: int) -> str:
    return f"run-{run_pk}.logs"


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for sends from synchronous code: the channel layer keeps its
    Redis connections per loop, so reusing a loop saves a connection setup (~10 ms) per send."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="broadcast", daemon=True).start()
            _loop = loop
        return _loop


def broadcast(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Best effort, in order: what is broadcast was stored first, so a viewer that misses it
    back-fills by sequence number."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": event_type, **payload}
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _sender_loop())
            future.result(SEND_TIMEOUT_SECONDS)
        else:
            # Called from async code: hand the send to that loop.
            asyncio.ensure_future(layer.group_send(group, message))
    except Exception:  # a viewer must never be able to break a run
        logger.warning("broadcast to %s failed", group, exc_info=True)
