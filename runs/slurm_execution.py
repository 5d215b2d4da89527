"""What a Slurm job's task does on its host: TrainHub's node-side execution of the host's share of
the run (the NodeExecution a local node runs: environment, snapshot, box, logs, outputs), with its
node rank from Slurm's allocation (SLURM_NODEID) and its address as Slurm knows the host."""

from __future__ import annotations

import os
import signal
import threading
import time

from django.conf import settings

from runs import services
from runs.execution import NodeExecution
from runs.executor import RunAborted
from runs.models import Run, RunNode, RunStatus, SlurmJob
from runs.slurm import END_REASONS, end_reason
from trainhub.compute import slurm
from trainhub.compute.models import Node
from trainhub.compute.services import node_docker_support, node_register_slurm_host, node_set_idle
from trainhub.environments.builders import uses_docker

RUN_NODES_SECONDS = 60
JOB_ID_SECONDS = 10
NOT_THIS_JOB = "Slurm job {job_id} is not run {run}'s job ({expected}): refusing to run it."
TASK_STOPPED = "Slurm stopped the run's task on node {node}."


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
    node = register_host(run, host)
    services.placement_join(run=run, node=node, node_rank=node_rank)
    try:
        SlurmNodeExecution(run.pk, node.pk, node_rank, stop, job_id).execute()
    finally:
        node_set_idle(node.pk)
    return 0


def register_host(run: Run, host: str) -> Node:
    """The node row of this Slurm host of the run's cluster."""
    address = settings.TRAINHUB_NODE_ADDRESS or slurm.node_address(host)
    docker = uses_docker(run.environment_spec) and node_docker_support(settings.TRAINHUB_NODE_DOCKER)[0]
    return node_register_slurm_host(cluster=run.cluster, host=host, address=address, docker=docker, run_id=run.pk)


class SlurmNodeExecution(NodeExecution):
    """A local node's execution, but for the ends that are Slurm's to tell (a time limit, a node
    failure, scancel) and for peers that join as their tasks start rather than at dispatch."""

    def __init__(self, run_pk: int, node_pk: int, node_rank: int, stop_event: threading.Event, job_id: str):
        super().__init__(run_pk, node_pk, node_rank, stop_event)
        self.job_id = job_id

    def wait_for_peers(self) -> None:
        deadline = time.monotonic() + RUN_NODES_SECONDS
        while RunNode.objects.filter(run=self.run).count() < self.run.node_count:
            self.check_abort()
            if time.monotonic() > deadline:
                raise RunAborted("the run's other Slurm tasks never started")
            time.sleep(0.2)
        super().wait_for_peers()

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
