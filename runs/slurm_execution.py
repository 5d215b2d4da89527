"""What a Slurm job's task does on its host: TrainHub's node-side execution of the host's share of
the run (the NodeExecution a local node runs: environment, snapshot, box, logs, outputs), with its
node rank from Slurm's allocation (SLURM_NODEID) and its address as Slurm knows the host. While it
runs, it heartbeats through Redis, so that the controller fails the run soon after its host dies."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from runs import services
from runs.execution import NodeExecution
from runs.executor import SetupFailed
from runs.launch_plan import Rendezvous
from runs.models import Run, RunNode, RunStatus, SlurmJob
from runs.slurm import END_REASONS, TASK_HEARTBEAT_SECONDS, TASK_SILENCE_SECONDS, end_reason
from trainhub import redis_keys
from trainhub.compute import slurm
from trainhub.compute.models import Node
from trainhub.compute.services import node_docker_support, node_register_slurm_host, node_set_idle
from trainhub.environments.builders import uses_docker
from trainhub.redis_conn import get_redis

logger = logging.getLogger(__name__)

JOB_ID_SECONDS = 10
HOSTS_JOIN_SECONDS = 120
HOSTS_NEVER_JOINED = (
    "The run's other Slurm tasks did not start within {seconds} s of its first: mpirun was not started."
)
NOT_THIS_JOB = "Slurm job {job_id} is not run {run}'s job ({expected}): refusing to run it."
TASK_STOPPED = "Slurm stopped the run's task on node {node}."
NO_DOCKER_ON_SLURM_HOST = (
    "Environment {environment!r} is a Docker environment (docker.enabled = True), but Slurm host {host} "
    "has no Docker engine TrainHub may use ({why}). Start one on the hosts of partition {partition}, "
    "usable by the account the jobs run as, or set docker.enabled = False."
)


def run_task(run_pk: int) -> int:
    job_id = os.environ["SLURM_JOB_ID"]
    node_rank = int(os.environ["SLURM_NODEID"])
    host = os.environ["SLURMD_NODENAME"]
    stop = threading.Event()
    # scancel, a time limit or a node failure: Slurm signals the task, which stops its ranks.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + JOB_ID_SECONDS
    # The job can start in the instant between sbatch's answer and the server recording its id.
    while (expected := SlurmJob.objects.filter(run_id=run_pk).values_list("job_id", flat=True).first()) == "":
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if expected != job_id:
        print(NOT_THIS_JOB.format(job_id=job_id, run=run_pk, expected=expected), flush=True)
        return 1
    run = Run.objects.select_related("cluster__workspace").get(pk=run_pk)
    if run.is_final:
        return 0
    # Beating before the task joins the run: the controller watches every task that has joined.
    heartbeat = TaskHeartbeat(run.pk, node_rank, host)
    heartbeat.start()
    try:
        docker, docker_problem = host_docker(run, host)
        node = register_host(run, host, docker)
        services.placement_join(run=run, node=node, node_rank=node_rank)
        try:
            SlurmNodeExecution(run.pk, node, node_rank, stop, job_id, docker_problem).execute()
        finally:
            node_set_idle(node.pk)
    finally:
        heartbeat.stop()
    return 0


class TaskHeartbeat(threading.Thread):
    """Sets the task's key in Redis (redis_keys.run_task_alive) as it starts and every
    TASK_HEARTBEAT_SECONDS after, until stopped (runs/slurm.py, watch_tasks, says why these numbers)."""

    def __init__(self, run_pk: int, node_rank: int, host: str):
        super().__init__(daemon=True, name="slurm-task-heartbeat")
        self.key = redis_keys.run_task_alive(run_pk, node_rank)
        self.host = host
        self.done = threading.Event()
        self.beat()

    def beat(self) -> None:
        get_redis().set(self.key, self.host, ex=TASK_SILENCE_SECONDS)

    def run(self) -> None:
        last = time.monotonic()
        while not self.done.wait(TASK_HEARTBEAT_SECONDS):
            now = time.monotonic()
            if now - last > 3 * TASK_HEARTBEAT_SECONDS:
                # In the job's output: a host this starved is close to being judged lost.
                logger.warning(
                    "heartbeat %.1f s late (lost past %s s)", now - last - TASK_HEARTBEAT_SECONDS, TASK_SILENCE_SECONDS
                )
            last = now
            try:
                self.beat()
            except redis.RedisError:
                logger.warning("heartbeat of %s failed", self.key, exc_info=True)

    def stop(self) -> None:
        self.done.set()
        self.join()


def host_docker(run: Run, host: str) -> tuple[bool, str]:
    """For a Docker run, whether this host runs Docker environments, and why not ('' when it does);
    other runs never ask the engine."""
    if not uses_docker(run.environment_spec):
        return False, ""
    try:
        docker, said = node_docker_support(settings.TRAINHUB_NODE_DOCKER)
    except ImproperlyConfigured as error:  # TRAINHUB_NODE_DOCKER=true, and no engine answers
        docker, said = False, str(error)
    if docker:
        return True, ""
    partition = run.cluster.slurm_partition
    return False, NO_DOCKER_ON_SLURM_HOST.format(
        environment=run.environment_name, host=host, why=said, partition=partition
    )


def register_host(run: Run, host: str, docker: bool) -> Node:
    """The node row of this Slurm host of the run's cluster."""
    address = settings.TRAINHUB_NODE_ADDRESS or slurm.node_address(host)
    return node_register_slurm_host(cluster=run.cluster, host=host, address=address, docker=docker, run_id=run.pk)


class SlurmNodeExecution(NodeExecution):
    """A local node's execution, but for the ends that are Slurm's to tell (a time limit, a node
    failure, scancel)."""

    def __init__(
        self,
        run_pk: int,
        node: Node,
        node_rank: int,
        stop_event: threading.Event,
        job_id: str,
        docker_problem: str = "",
    ):
        super().__init__(run_pk, node, node_rank, stop_event)
        self.job_id = job_id
        self.docker_problem = docker_problem

    def prepare_environment(self) -> tuple[Path, dict[str, str]]:
        if self.docker_problem:
            raise SetupFailed(self.docker_problem, "")
        return super().prepare_environment()

    def rendezvous(self) -> Rendezvous:
        if self.leader and self.mpi:
            self.wait_for_hosts()
        return super().rendezvous()

    def wait_for_hosts(self) -> None:
        """Until every task of the job has joined the run: mpirun's host records each rank with its
        host as it starts them all, and a host is known once its task joins (the tasks start as Slurm
        starts them, not at dispatch as local nodes are placed). Usually done long before: a task
        joins before it prepares."""
        deadline = time.monotonic() + HOSTS_JOIN_SECONDS
        while RunNode.objects.filter(run=self.run).count() < self.run.node_count:
            self.check_abort()
            if time.monotonic() > deadline:
                raise SetupFailed(HOSTS_NEVER_JOINED.format(seconds=HOSTS_JOIN_SECONDS), "")
            time.sleep(0.2)

    def end_aborted(self, reason: str) -> None:
        if reason != "node stopped":
            super().end_aborted(reason)
            return
        self.run.refresh_from_db(fields=["status", "cancel_requested_at", "cancel_reason"])
        if self.run.is_final:
            return
        state = slurm.job_state(self.job_id)
        if self.run.cancel_requested_at:
            services.run_transition(self.run.pk, RunStatus.FINALIZING)
            services.run_transition(
                self.run.pk, RunStatus.CANCELED, reason=self.run.cancel_reason or services.CANCELED_BY_USER
            )
        elif state is not None and state.verdict in END_REASONS:
            services.fail_run(self.run.pk, end_reason(state, allocation=os.environ.get("SLURM_JOB_NODELIST", "")))
        else:
            # Slurm has not said why yet: the server's watch records its verdict once the job ends,
            # which it does as this task exits.
            self.say(TASK_STOPPED.format(node=os.environ.get("SLURMD_NODENAME", "?")))
