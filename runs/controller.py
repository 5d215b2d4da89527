"""The controller loop: fail the runs of lost nodes, place queued runs, follow Slurm jobs, and keep
each local cluster's node processes between min_nodes and max_nodes."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from runs.containers import reap_containers_of_gone_nodes
from runs.scheduling import dispatch_all, redispatch_lost_jobs
from runs.selectors import queued_node_demand
from runs.services import lost_node_runs
from runs.slurm import watch_jobs
from sweeps.services import sweeps_tick
from trainhub.compute import services
from trainhub.compute.models import ComputeCluster, Node, NodeState, Provisioner

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.5
DISPATCH_EVERY = 2.0
PROVISION_EVERY = 1.0
# squeue once a second at most, and only while a Slurm job's run is active.
SLURM_WATCH_EVERY = 1.0
# A managed node that has not registered this long after its start is considered failed.
NODE_START_GRACE = timedelta(seconds=60)


def reap_lost_nodes() -> list[int]:
    # A Slurm host's node row stands for a job's task there: Slurm, not a heartbeat, says it is gone.
    candidates = list(
        Node.objects.filter(state__in=[NodeState.IDLE, NodeState.BUSY, NodeState.STOPPING])
        .exclude(cluster__provisioner=Provisioner.SLURM)
        .values_list("pk", flat=True)
    )
    alive = services.alive_node_ids(candidates)
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
class LocalProvisioner:
    """Starts and stops node processes on this machine for clusters with the local provisioner."""

    children: dict[int, list[subprocess.Popen]] = field(default_factory=dict)
    log_dir: Path = field(default_factory=lambda: Path(settings.DATA_DIR) / "logs")

    def tick(self) -> None:
        for cluster in ComputeCluster.objects.filter(provisioner=Provisioner.LOCAL).select_related("workspace"):
            self._tick_cluster(cluster)

    def _tick_cluster(self, cluster: ComputeCluster) -> None:
        processes = [p for p in self.children.get(cluster.pk, []) if p.poll() is None]
        self.children[cluster.pk] = processes
        live = Node.objects.filter(cluster=cluster, state__in=[NodeState.IDLE, NodeState.BUSY])
        busy = live.filter(state=NodeState.BUSY).count()
        queued = queued_node_demand(cluster)
        wanted = min(cluster.max_nodes, max(cluster.min_nodes, busy + queued))
        # Nodes started by hand count towards the cluster's size too.
        present = max(live.count(), len(processes))
        for _ in range(wanted - present):
            self._start_node(cluster)
        if present > wanted:
            self._scale_down(cluster, present - wanted)

    def _start_node(self, cluster: ComputeCluster) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"node-{cluster.workspace.name}-{cluster.name}.log", "ab")
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "trainhub_node",
                "--cluster",
                cluster.name,
                "--workspace",
                cluster.workspace.name,
                "--managed",
            ],
            cwd=settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_parent_death_signal,
        )
        logger.info("started a node for %s (pid %s)", cluster, process.pid)
        self.children.setdefault(cluster.pk, []).append(process)

    def _scale_down(self, cluster: ComputeCluster, excess: int) -> None:
        cutoff = timezone.now() - timedelta(seconds=cluster.idle_seconds_before_scaledown)
        idle = Node.objects.filter(cluster=cluster, state=NodeState.IDLE, managed=True, idle_since__lt=cutoff).order_by(
            "idle_since"
        )[:excess]
        for node in idle:
            if services.node_request_stop(node, "idle: scaled down"):
                logger.info("scaling down %s", node)

    def stop_all(self) -> None:
        processes = [p for group in self.children.values() for p in group if p.poll() is None]
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
    last_dispatch = last_provision = last_slurm_watch = 0.0
    try:
        while not stop:
            try:
                reap_lost_nodes()
                now = time.monotonic()
                if now - last_slurm_watch >= SLURM_WATCH_EVERY:
                    last_slurm_watch = now
                    watch_jobs()
                if now - last_provision >= PROVISION_EVERY:
                    last_provision = now
                    provisioner.tick()
                if now - last_dispatch >= DISPATCH_EVERY:
                    last_dispatch = now
                    redispatch_lost_jobs()
                    sweeps_tick()
                    dispatch_all()
            except Exception:
                logger.exception("controller tick failed")
            finally:
                close_old_connections()
            time.sleep(TICK_SECONDS)
    finally:
        provisioner.stop_all()
