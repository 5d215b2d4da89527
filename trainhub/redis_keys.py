"""Every name TrainHub gives a key or a channel in Redis, one function each, so that a reader
finds here what the site keeps there (RQ names its queues' and jobs' own keys)."""

from __future__ import annotations

PREFIX = "trainhub:"
# Live events go out on channels named LIVE_CHANNEL_PREFIX + the group (trainhub.live).
LIVE_CHANNEL_PREFIX = f"{PREFIX}live:"


def live_channel(group: str) -> str:
    return LIVE_CHANNEL_PREFIX + group


def node_alive(node_pk: int) -> str:
    """Set by each heartbeat with a short expiry: a node whose key expired is lost."""
    return f"{PREFIX}node:{node_pk}:alive"


def node_load(node_pk: int) -> str:
    """The node's machine's load averages, from its last heartbeat."""
    return f"{PREFIX}node:{node_pk}:load"


def node_standby(token: str) -> str:
    """A list a local cluster's standby node process waits on: the provisioner pushes its order to
    become a node (trainhub_node --standby)."""
    return f"{PREFIX}standby:{token}"


def endpoint_routes_channel() -> str:
    """The channel an endpoint's pk is published on whenever its replicas or keys change or it is
    deleted: each scoring proxy drops what it keeps of it (endpoints/proxy.py)."""
    return f"{PREFIX}endpoint-routes"


def endpoint_stats(endpoint_pk: int) -> str:
    """The endpoint's request count and total latency (a hash)."""
    return f"{PREFIX}endpoint:{endpoint_pk}:stats"


def run_peers_done(run_pk: int) -> str:
    """A list each node of the run pushes its node rank onto as it finishes: the lead node blocks
    on it rather than reading the database in a loop (runs/services.py, placement_done)."""
    return f"{PREFIX}run:{run_pk}:peers-done"
