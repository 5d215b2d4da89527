"""The single helper through which every live event reaches WebSocket viewers."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runs.live import channel_of, encode
from trainhub.redis_conn import get_redis

logger = logging.getLogger(__name__)

# Sends from async code leave the event loop (a Redis that is restarting makes a send wait), one
# at a time so that they keep their order.
_async_sends = ThreadPoolExecutor(1, thread_name_prefix="broadcast")


def run_group(run_pk: int) -> str:
    return f"run-{run_pk}.logs"


def members_group(workspace_pk: int) -> str:
    """Where a workspace's sockets hear that a member was removed (and close theirs)."""
    return f"workspace-{workspace_pk}.members"


def user_group(user_pk: int) -> str:
    """Where a user's sockets hear that a session of theirs ended or their password changed."""
    return f"user-{user_pk}.sessions"


def _publish(group: str, message: str) -> None:
    try:
        get_redis().publish(channel_of(group), message)
    except Exception:  # a viewer must never be able to break a run
        logger.warning("broadcast to %s failed", group, exc_info=True)


def broadcast(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Best effort, in order: one PUBLISH, whatever the number of viewers (each web process with
    viewers of the group hands it to them, see runs.live). What is broadcast was stored first, so a
    viewer that misses it back-fills by sequence number."""
    message = encode({"type": event_type, **payload})
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _publish(group, message)
    else:
        _async_sends.submit(_publish, group, message)
