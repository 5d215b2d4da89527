"""The controller loop: fail the runs of lost nodes (and of submitting machines gone silent), place
queued runs, follow Slurm jobs, and keep each local cluster's node processes between min_nodes and
max_nodes."""

from __future__ import annotations

import ctypes
import json
import logging
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from redis.exceptions import RedisError

from runs import events
from runs.containers import reap_containers_of_gone_nodes
from runs.local_runs import reap_silent_local_runs
from runs.scheduling import dispatch_all, redispatch_lost_jobs
from runs.selectors import queued_node_demand
from runs.services import lost_node_runs
from runs.slurm import submit_all_queued_runs, watch_jobs, watch_tasks
from trainhub import redis_keys
from trainhub.compute import services
from trainhub.compute.models import ComputeCluster, Node, NodeState, Provisioner
from trainhub.redis_conn import get_redis

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.5
DISPATCH_EVERY = 2.0
PROVISION_EVERY = 1.0
# squeue once a second at most, and only while a Slurm job's run is active or an ended run's job is
# left; the Slurm tasks' heartbeats as often; sbatch as soon as a run is queued (runs.slurm.
# wake_slurm_thread). In a thread of its own: a Slurm command waits up to 20 s for a slurmctld that
# is down, and the local clusters' nodes, runs and placements must not wait with it.
SLURM_WATCH_EVERY = 1.0


# Until when a missing heartbeat proves nothing (see reap_lost_nodes).
_heartbeats_unproven_until = 0.0


def reap_lost_nodes() -> list[int]:
    global _heartbeats_unproven_until
    # A Slurm host's node row stands for a job's task there: Slurm, not a heartbeat, says it is gone.
    candidates = list(
        Node.objects.filter(state__in=[NodeState.IDLE, NodeState.BUSY, NodeState.STOPPING])
        .exclude(cluster__provisioner=Provisioner.SLURM)
        .values_list("pk", flat=True)
    )
    # A Redis that restarted without persistence forgot every node's heartbeat, not only a dead
    # node's: the nodes get a heartbeat's lifetime to write theirs again before a missing one
    # counts (the controller took every node for lost when it reconnected before they did). Whether
    # Redis forgot is asked in the same transaction as the heartbeats: asked first on its own, a
    # restart between the two answers read the old Redis's "kept" and the new one's missing
    # heartbeats, and the live nodes were marked lost with their runs.
    forgot, alive = services.node_heartbeats(candidates)
    if forgot:
        _heartbeats_unproven_until = time.monotonic() + services.HEARTBEAT_TTL_SECONDS
    if time.monotonic() < _heartbeats_unproven_until:
        return []
    lost = [pk for pk in candidates if pk not in alive and services.node_mark_lost(pk)]
    if lost:
        logger.warning("nodes lost: %s", lost)
        lost_node_runs(lost)
        # The lost nodes' containers on this machine's engine, if any, stop with them.
        reap_containers_of_gone_nodes()
    return lost


def _set_parent_death_signal() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class Standby:
    """A node process started ahead for a cluster, everything loaded, waiting on its Redis list
    (`trainhub_node --standby TOKEN`) to register: it counts toward no limit until activated."""

    process: subprocess.Popen
    token: str


@dataclass
class LocalProvisioner:
    """Starts and stops node processes on this machine for clusters with the local provisioner, and
    keeps one standby per cluster below its max_nodes: a node added is then ready within a fraction
    of a second, where a new process takes seconds to load Django and start its worker."""

    children: dict[int, list[subprocess.Popen]] = field(default_factory=dict)
    standbys: dict[int, Standby] = field(default_factory=dict)
    keep_standby: bool = field(default_factory=lambda: settings.TRAINHUB_LOCAL_STANDBY)
    log_dir: Path = field(default_factory=lambda: Path(settings.DATA_DIR) / "logs")

    def tick(self) -> None:
        clusters = list(ComputeCluster.objects.filter(provisioner=Provisioner.LOCAL).select_related("workspace"))
        for cluster in clusters:
            self._tick_cluster(cluster)
        # A deleted cluster's standby goes with it.
        for pk in set(self.standbys) - {cluster.pk for cluster in clusters}:
            self._stop(self.standbys.pop(pk).process)

    def _tick_cluster(self, cluster: ComputeCluster) -> None:
        processes = [p for p in self.children.get(cluster.pk, []) if p.poll() is None]
        self.children[cluster.pk] = processes
        live = Node.objects.filter(cluster=cluster, state__in=[NodeState.IDLE, NodeState.BUSY])
        busy = live.filter(state=NodeState.BUSY).count()
        queued = queued_node_demand(cluster)
        wanted = min(cluster.max_nodes, max(cluster.min_nodes, busy + queued))
        decided_at = time.time()
        # Nodes started by hand count towards the cluster's size too.
        present = max(live.count(), len(processes))
        for _ in range(wanted - present):
            self._add_node(cluster, decided_at)
        if present > wanted:
            self._scale_down(cluster, present - wanted)
        standby = self.standbys.get(cluster.pk)
        if standby is not None and standby.process.poll() is not None:
            logger.warning("the standby node of %s exited (code %s): replacing it", cluster, standby.process.returncode)
            del self.standbys[cluster.pk]
            standby = None
        if self.keep_standby and standby is None and max(present, wanted) < cluster.max_nodes:
            token = secrets.token_hex(8)
            self.standbys[cluster.pk] = Standby(self._start_process(cluster, ["--standby", token]), token)

    def _add_node(self, cluster: ComputeCluster, decided_at: float) -> None:
        standby = self.standbys.pop(cluster.pk, None)
        if standby is not None and standby.process.poll() is None:
            key = redis_keys.node_standby(standby.token)
            pipe = get_redis().pipeline()
            pipe.rpush(key, json.dumps({"decided_at": decided_at}))
            # Not left behind if the standby dies before it reads it (then the next tick starts another node).
            pipe.expire(key, 60)
            pipe.execute()
            process = standby.process
            logger.info("activated the standby node of %s (pid %s)", cluster, process.pid)
        else:
            process = self._start_process(cluster, ["--decided-at", repr(decided_at)])
            logger.info("started a node for %s (pid %s)", cluster, process.pid)
        self.children.setdefault(cluster.pk, []).append(process)

    def _start_process(self, cluster: ComputeCluster, extra: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"node-{cluster.workspace.name}-{cluster.name}.log", "ab")
        return subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "trainhub_node",
                "--cluster",
                cluster.name,
                "--workspace",
                cluster.workspace.name,
                "--managed",
                *extra,
            ],
            cwd=settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_parent_death_signal,
        )

    def _scale_down(self, cluster: ComputeCluster, excess: int) -> None:
        cutoff = timezone.now() - timedelta(seconds=cluster.idle_seconds_before_scaledown)
        idle = Node.objects.filter(cluster=cluster, state=NodeState.IDLE, managed=True, idle_since__lt=cutoff).order_by(
            "idle_since"
        )[:excess]
        for node in idle:
            if services.node_request_stop(node, "idle: scaled down"):
                logger.info("scaling down %s", node)

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        processes = [p for group in self.children.values() for p in group if p.poll() is None]
        processes += [standby.process for standby in self.standbys.values() if standby.process.poll() is None]
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def run_controller(stop: list[bool]) -> None:
    provisioner = LocalProvisioner()
    last_dispatch = last_provision = 0.0
    woken = False
    redis = get_redis()
    slurm_watcher = threading.Thread(target=watch_slurm, args=(stop,), name="slurm-watch", daemon=True)
    slurm_watcher.start()
    try:
        while not stop:
            try:
                reap_lost_nodes()
                now = time.monotonic()
                if woken or now - last_provision >= PROVISION_EVERY:
                    last_provision = now
                    provisioner.tick()
                if woken:
                    dispatch_all()
                if now - last_dispatch >= DISPATCH_EVERY:
                    last_dispatch = now
                    redispatch_lost_jobs()
                    reap_silent_local_runs()
                    events.controller_tick.notify()
                    dispatch_all()
            except Exception:
                logger.exception("controller tick failed")
            finally:
                close_old_connections()
            # A run waiting for nodes wakes the controller (runs.scheduling.wake_controller); the
            # tick stays for what no event announces (heartbeats expiring, idle nodes to scale down).
            try:
                woken = redis.blpop([redis_keys.controller_wake()], timeout=TICK_SECONDS) is not None
            except RedisError:
                logger.warning("waiting for the controller's wake-up failed", exc_info=True)
                woken = False
                time.sleep(TICK_SECONDS)
    finally:
        provisioner.stop_all()
        slurm_watcher.join(timeout=1)


def watch_slurm(stop: list[bool]) -> None:
    """Slurm's part of the controller: its queued runs' sbatch, its runs' task heartbeats, jobs and
    leftover jobs."""
    redis = get_redis()
    while not stop:
        began = time.monotonic()
        try:
            submit_all_queued_runs()
            watch_tasks()
            watch_jobs()
        except Exception:
            logger.exception("watching Slurm failed")
        finally:
            close_old_connections()
        rest = SLURM_WATCH_EVERY - (time.monotonic() - began)
        if rest <= 0:
            continue
        try:
            # Woken at once when a run is queued on a Slurm cluster.
            redis.blpop([redis_keys.slurm_wake()], timeout=rest)
        except RedisError:
            logger.warning("waiting for the Slurm thread's wake-up failed", exc_info=True)
            time.sleep(rest)
