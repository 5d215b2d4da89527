"""The single helper through which every live event reaches WebSocket viewers."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def run_group(run_pk: int) -> str:
    return f"run-{run_pk}.logs"


def broadcast(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Best effort: what is broadcast was stored first, so a viewer that misses it back-fills."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": event_type, **payload})
    except Exception:  # a viewer must never be able to break a run
        logger.warning("broadcast to %s failed", group, exc_info=True)
