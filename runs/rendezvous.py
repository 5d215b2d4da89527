"""How a run's nodes meet: node 0 picks a free master port on its address and publishes the pair
in Redis; every other node waits for it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from runs.executor import SetupFailed
from runs.launch_plan import Rendezvous
from trainhub import redis_keys

RENDEZVOUS_TIMEOUT_SECONDS = 120
DEFAULT_MASTER_PORT = 6105
MASTER_PORT_HOLD_SECONDS = 120


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port")


def reserve_master_port(redis: Any, address: str, run_pk: int) -> int:
    """A free port on `address` that no other run is about to take. A port is free when checked
    but bound only once rank 0 starts, so two runs starting at once on one host would otherwise
    both pick 6105; each holds its pick in Redis until rank 0 has surely bound it."""
    preferred = DEFAULT_MASTER_PORT
    for _ in range(20):
        port = free_port(preferred)
        if redis.set(redis_keys.master_port(address, port), run_pk, nx=True, ex=MASTER_PORT_HOLD_SECONDS):
            return port
        preferred = 0
    raise OSError(f"no free port on {address}")


def publish(redis: Any, run_pk: int, address: str, *, peers: bool = True) -> Rendezvous:
    """Node 0's side: its address and a master port of its own, for the other nodes (written for
    them only where the run has others: `peers`)."""
    port = reserve_master_port(redis, address, run_pk)
    if peers:
        redis.set(redis_keys.run_rendezvous(run_pk), json.dumps({"addr": address, "port": str(port)}), ex=7 * 86400)
    return Rendezvous(address, port)


def wait_for_leader(
    redis: Any, run_pk: int, *, node_name: str, node_rank: int, check_abort: Callable[[], None]
) -> Rendezvous:
    """Another node's side: node 0's address and port, once published (the run's abort ends the wait)."""
    key = redis_keys.run_rendezvous(run_pk)
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_SECONDS
    while True:
        raw = redis.get(key)
        if raw:
            value = json.loads(raw)
            return Rendezvous(value["addr"], int(value["port"]))
        check_abort()
        if time.monotonic() > deadline:
            raise SetupFailed(
                f"Node {node_name} (node rank {node_rank}) waited "
                f"{RENDEZVOUS_TIMEOUT_SECONDS} s for node 0's address and port: rendezvous failed.",
                "",
            )
        time.sleep(0.1)
