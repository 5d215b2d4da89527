"""A node: heart-beats into Redis, takes its jobs from its own Redis list (one blocking pop each) and
runs them in-process, one at a time."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from types import FrameType

import redis
from django.conf import settings
from django.db import close_old_connections, connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from runs.containers import reap_containers_of_gone_nodes
from runs.execution import execute_on_node
from runs.scheduling import dispatch_cluster
from trainhub import redis_keys
from trainhub.compute import services
from trainhub.compute.models import Node, NodeState
from trainhub.compute.usage import UsageProbe
from trainhub.redis_conn import MAX_BLOCK_SECONDS, get_redis
from trainhub.sandbox import warm_supervisor

logger = logging.getLogger(__name__)

_stop_event = threading.Event()
PERSIST_HEARTBEAT_EVERY = 5.0
# Pushed onto the node's own list when it is asked to stop while it waits: its pop returns at once.
WAKE = "stop"


class NodeLoop:
    """Takes the node's jobs one at a time and runs them. Asked to stop (SIGTERM, SIGINT) while a run
    is on it, it stops the run's ranks (a node's stop ends its run), lets the run end and stops; asked
    again more than a second later, it stops at once. Asked while it waits, it stops at once."""

    def __init__(self, node: Node):
        self.node = node
        self.key = redis_keys.node_jobs(node.pk)
        self.busy = False
        self.stop_asked_at: float | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_asked_at is not None:
            if time.monotonic() - self.stop_asked_at > 1 and self.busy:
                raise SystemExit(128 + signum)
            return
        self.stop_asked_at = time.monotonic()
        if self.busy:
            _stop_event.set()
            return
        try:
            # Not the connection the pop waits on (this runs between its system calls).
            once = {"socket_timeout": 2, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}
            with redis.Redis.from_url(settings.REDIS_URL, **once) as own:
                own.lpush(self.key, WAKE)
        except redis.RedisError:
            pass  # the pop returns within MAX_BLOCK_SECONDS anyway

    def work(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        connection = get_redis()
        while self.stop_asked_at is None:
            try:
                popped = connection.blpop([self.key], timeout=MAX_BLOCK_SECONDS)
            except (redis.ConnectionError, redis.TimeoutError):
                # Redis restarting (the client retried for a while): the jobs wait there.
                logger.warning("node %s: Redis does not answer; trying again", self.node.name, exc_info=True)
                time.sleep(1)
                continue
            if popped is None:
                continue
            self.busy = True
            if self.stop_asked_at is not None:
                connection.lpush(self.key, popped[1])  # for give_back
                break
            job = self._job(popped[1])
            if job is not None:
                self._run(*job)
            self.busy = False

    def _job(self, message: bytes | str) -> tuple[int, int] | None:
        """(the run's pk, this node's rank in it), or None for anything else (the wake-up; a
        message no dispatch writes is said in the node's log, never run)."""
        if message in (WAKE, WAKE.encode()):
            return None
        try:
            job = json.loads(message)
            run_pk, node_rank = job["run"], job["node_rank"]
            if isinstance(run_pk, int) and isinstance(node_rank, int):
                return run_pk, node_rank
        except (ValueError, TypeError, KeyError):
            pass
        logger.warning("node %s: ignored a message in its job list that is no job: %.80r", self.node.name, message)
        return None

    def _run(self, run_pk: int, node_rank: int) -> None:
        mine = True
        try:
            mine = execute_on_node(run_pk, self.node, node_rank, _stop_event)
        except Exception:  # the node must survive anything a run does
            logger.exception("node %s: run %s failed", self.node.name, run_pk)
        finally:
            if mine:  # a job taken back: its key, if any, is the new placement's
                get_redis().delete(redis_keys.node_job(run_pk, node_rank))

    def give_back(self) -> None:
        """The jobs left in the node's list will never be taken by it: their keys go, so that the
        controller places their runs again (runs/scheduling.py, redispatch_lost_jobs). Called once
        the node is recorded stopped: a run given back is never placed on it again."""
        try:
            connection = get_redis()
            pipe = connection.pipeline()
            pipe.lrange(self.key, 0, -1)
            pipe.delete(self.key)
            left, _ = pipe.execute()
            jobs = [job for job in map(self._job, left) if job is not None]
            if jobs:
                connection.delete(*(redis_keys.node_job(run_pk, node_rank) for run_pk, node_rank in jobs))
        except redis.RedisError:
            logger.warning("node %s: the jobs left in its list were not given back", self.node.name, exc_info=True)


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
    if node.docker:
        # Containers a killed node of this site left behind. Beside the node's start, not before
        # it: the Docker SDK takes a moment to import. (A node that stops removes its run's
        # containers as the run ends: a stop waits for the run.)
        threading.Thread(target=_reap_containers, daemon=True, name="container-reaper").start()
    warm_supervisor()  # for the first run's first rank (runs start from this thread)
    dispatch_cluster(node.cluster_id)
    loop = NodeLoop(node)
    try:
        loop.work()
    finally:
        heartbeat.done.set()
        # Stopped first, then its jobs given back: the controller's placing them again (which makes
        # the run's nodes idle again) found this node idle and alive in between, and sent them here.
        services.node_stopped(node.pk, "stopped")
        loop.give_back()
