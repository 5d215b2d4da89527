"""A node: an RQ worker on its own queue that heart-beats into Redis and runs run jobs in-process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from django.db import close_old_connections, connection
from rq import SimpleWorker
from rq.worker import WorkerStatus

from runs.containers import reap_containers_of_gone_nodes
from runs.scheduling import dispatch_cluster, node_queue
from trainhub.compute import services
from trainhub.compute.models import Node, NodeState
from trainhub.compute.usage import UsageProbe
from trainhub.redis_conn import worker_redis
from trainhub.sandbox import warm_supervisor

logger = logging.getLogger(__name__)

_stop_event = threading.Event()
PERSIST_HEARTBEAT_EVERY = 5.0


def current_stop_event() -> threading.Event:
    """Set when the node is asked to stop while a run is on it: the run's ranks are stopped."""
    return _stop_event


class NodeWorker(SimpleWorker):
    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            _stop_event.set()
        super().request_stop(signum, frame)


class Heartbeat(threading.Thread):
    """Refreshes the node's Redis key; stops the node when the provisioner scales it down."""

    def __init__(self, node: Node):
        super().__init__(daemon=True, name="heartbeat")
        self.node = node
        self.done = threading.Event()

    def run(self) -> None:
        last_persist = last_usage = 0.0
        usage = UsageProbe()
        while not self.done.wait(services.HEARTBEAT_SECONDS):
            try:
                now = time.monotonic()
                report = now - last_usage >= services.USAGE_SECONDS
                if report:
                    last_usage = now
                services.node_heartbeat(self.node, usage.read() if report else None)
                if now - last_persist > PERSIST_HEARTBEAT_EVERY:
                    last_persist = now
                    services.node_heartbeat_persist(self.node)
                    state = Node.objects.filter(pk=self.node.pk).values_list("state", flat=True).first()
                    if state in (NodeState.STOPPING, NodeState.LOST, None):
                        logger.info("node %s: asked to stop (%s)", self.node.name, state)
                        os.kill(os.getpid(), signal.SIGTERM)
                    close_old_connections()
            except Exception:
                logger.warning("node %s: heartbeat failed", self.node.name, exc_info=True)


def _reap_containers() -> None:
    try:
        reap_containers_of_gone_nodes()
    except Exception:
        logger.warning("removing the containers of gone nodes failed", exc_info=True)
    finally:
        connection.close()  # this thread's own


def run_node(node: Node) -> None:
    # The node's database connections stay open from one run to the next (close_old_connections
    # still replaces a broken one): a new SQLite connection reads the whole schema first, ~1.5 ms
    # of CPU on every run's pickup.
    connection.settings_dict["CONN_MAX_AGE"] = None
    heartbeat = Heartbeat(node)
    heartbeat.start()
    worker = NodeWorker([node_queue(node)], connection=worker_redis(), name=node.name)
    if node.docker:
        # Containers a killed node of this site left behind. Beside the node's start, not before
        # it: the Docker SDK takes a moment to import. (A node that stops removes its run's
        # containers as the run ends: a stop waits for the run.)
        threading.Thread(target=_reap_containers, daemon=True, name="container-reaper").start()
    warm_supervisor()  # for the first run's first rank (runs start from this thread)
    dispatch_cluster(node.cluster_id)
    try:
        worker.work(logging_level="WARNING")
    finally:
        heartbeat.done.set()
        services.node_stopped(node.pk, "stopped")
