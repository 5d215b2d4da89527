"""Live events for the browser's sockets: a run's log lines, status and metrics as they are stored,
and the access changes that close a user's sockets. Each is published once to Redis and each web
process hands it to its own sockets (`hub`); apps publish through the functions below, build
their sockets on `trainhub.live.sockets.LiveSocket`, and a request that waits for a group's next
event (a long poll) enters `watching(group)`."""

from trainhub.live.hub import watching
from trainhub.live.publish import (
    close_member_sockets,
    close_session_sockets,
    close_user_sockets,
    publish_log_lines,
    publish_metrics,
    publish_run_status,
    run_logs_group,
    run_metrics_group,
)

__all__ = [
    "close_member_sockets",
    "close_session_sockets",
    "close_user_sockets",
    "publish_log_lines",
    "publish_metrics",
    "publish_run_status",
    "run_logs_group",
    "run_metrics_group",
    "watching",
]
