"""Publishing live events: each is one PUBLISH, whatever the number of sockets that follow it (every
web process with followers of the group hands it to them, see trainhub.live.hub)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trainhub.live.hub import channel_of, encode
from trainhub.redis_conn import get_redis

logger = logging.getLogger(__name__)

# Sends from async code leave the event loop (a Redis that is restarting makes a send wait), one
# at a time so that they keep their order.
_async_sends = ThreadPoolExecutor(1, thread_name_prefix="live-publish")


def run_logs_group(run_pk: int) -> str:
    """A run's log lines and status changes."""
    return f"run-{run_pk}.logs"


def run_metrics_group(run_pk: int) -> str:
    """A run's metric batches."""
    return f"run-{run_pk}.metrics"


def members_group(workspace_pk: int) -> str:
    """Where a workspace's sockets hear that a member was removed (and close theirs)."""
    return f"workspace-{workspace_pk}.members"


def user_group(user_pk: int) -> str:
    """Where a user's sockets hear that a session of theirs ended or their password changed."""
    return f"user-{user_pk}.sessions"


def _send(group: str, message: str) -> None:
    try:
        get_redis().publish(channel_of(group), message)
    except Exception:  # a viewer must never be able to break a run
        logger.warning("live event to %s failed", group, exc_info=True)


def publish(group: str, event_type: str, payload: dict[str, Any]) -> None:
    """Best effort, in order. What is published was stored first, so a socket that misses it
    back-fills by sequence number."""
    message = encode({"type": event_type, **payload})
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _send(group, message)
    else:
        _async_sends.submit(_send, group, message)


def publish_log_lines(run_pk: int, stream: str, first_seq: int, lines: list[str]) -> None:
    """Lines of a run stored with sequence numbers first_seq, first_seq + 1, …"""
    publish(run_logs_group(run_pk), "log.lines", {"stream": stream, "first_seq": first_seq, "lines": lines})


def publish_run_status(run_pk: int, change: dict[str, Any]) -> None:
    """A run's new status (status, reason, at, exit_code, failed_rank)."""
    publish(run_logs_group(run_pk), "run.status", change)


def publish_metrics(run_pk: int, batch: dict[str, Any]) -> None:
    """A stored batch of a run's metrics, as the run page charts it."""
    publish(run_metrics_group(run_pk), "metrics.batch", {"batch": batch})


def close_member_sockets(workspace_pk: int, user_pk: int) -> None:
    """The user is no longer a member of the workspace: their sockets on its runs close (4403)."""
    publish(members_group(workspace_pk), "member.removed", {"user_id": user_pk})


def close_session_sockets(user_pk: int, session_key: str) -> None:
    """The session was signed out: the sockets opened with it close (4401)."""
    publish(user_group(user_pk), "session.ended", {"session_key": session_key})


def close_user_sockets(user_pk: int) -> None:
    """No session of the user counts any more (their password changed): all their sockets close (4401)."""
    publish(user_group(user_pk), "password.changed", {})
