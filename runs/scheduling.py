"""Placing queued runs on nodes: all of a run's nodes at once or none (gang scheduling).

Runs of a cluster start in submission order. When the run at the head of a cluster's queue
cannot get all its nodes, nothing behind it starts either: the nodes that free up are kept
for it, so a large run is never starved by a stream of small ones.

A node's job lives in Redis only: when Redis loses its data (a restart without persistence)
before the node took the job, the controller finds the run's job gone and places the run again.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from runs.models import ACTIVE_STATUSES, PlacementState, Run, RunNode, RunStatus
from runs.services import clear_dispatch_keys, clear_run_keys, fail_run, placement_assign, placement_done
from runs.slurm import wake_slurm_thread
from runs.tokens import run_token
from trainhub import redis_keys
from trainhub.compute.models import ComputeCluster, Node, NodeState, Provisioner
from trainhub.compute.services import alive_node_ids, node_assign, node_set_idle, nodes_release
from trainhub.environments.builders import uses_docker
from trainhub.redis_conn import get_redis, wake
from trainhub.workspaces.selectors import hash_token

logger = logging.getLogger(__name__)

# A job is in its node's list within milliseconds of the dispatch's commit, and its key stays in
# Redis while the node runs it: one missing this long after the dispatch was lost with Redis's data.
LOST_JOB_GRACE = timedelta(seconds=5)
# A job's key outlives any wait for a live node; one left by a node that was killed goes by itself.
JOB_KEY_SECONDS = 86400
JOB_LOST = (
    "The job of node {node} (node rank {rank}) was lost before that node started it (Redis lost its "
    "data), while other nodes of the run had started: submit the run again."
)


def dispatch_cluster(cluster_pk: int) -> list[int]:
    """Start as many queued runs of the cluster as its idle nodes allow; returns their ids. A Slurm
    cluster's runs all go to Slurm, which decides when each starts: the controller's Slurm thread
    submits them (sbatch waits up to 20 s for a slurmctld that is down), woken here."""
    cluster = ComputeCluster.objects.filter(pk=cluster_pk).first()
    if cluster is not None and cluster.is_slurm:
        wake_slurm_thread()
        return []
    if cluster is not None and cluster.is_submitting_machine:
        return []  # its runs are claimed by their submitters' machines (runs/local_runs.py)
    started: list[int] = []
    while True:
        placed, short_of_nodes = _place_head_run(cluster_pk)
        if placed is None:
            if short_of_nodes:
                wake_controller()
            return started
        started.append(placed)


def wake_controller() -> None:
    """The controller provisions and dispatches now rather than at its next tick: a run waits for
    nodes that a local cluster can add, or that it may find free."""
    wake(redis_keys.controller_wake())


def _place_head_run(cluster_pk: int) -> tuple[int | None, bool]:
    """The head run of the cluster's queue placed on idle nodes: (its pk, False); (None, True) when
    it waits for nodes, (None, False) when nothing is queued."""
    with transaction.atomic():
        head = (
            Run.objects.select_for_update()
            .filter(cluster_id=cluster_pk, status=RunStatus.QUEUED, dispatched_at__isnull=True)
            .order_by("id")
            .first()
        )
        if head is None:
            return None, False
        if not _place(head):
            return None, True
        return head.pk, False


def place_submitted(run: Run, cluster: ComputeCluster, new_keys: bool) -> bool:
    """The run just made, placed in its submit's own transaction when it heads its cluster's queue
    and idle nodes are there for it: one transaction and no second wait for the database's write
    lock between the submit and the node's job. False leaves it to dispatch_cluster (after commit).
    With `new_keys`, the jobs' pipeline clears every Redis key of the run's id first, its log's
    line counter too (nothing is logged yet)."""
    if cluster.is_slurm or cluster.is_submitting_machine:
        return False
    waiting = Run.objects.filter(
        cluster_id=cluster.pk, status=RunStatus.QUEUED, dispatched_at__isnull=True, pk__lt=run.pk
    )
    if waiting.exists():
        return False  # runs start in submission order
    return _place(run, new_keys=new_keys)


def _place(head: Run, *, new_keys: bool = False) -> bool:
    """`head` (locked by the caller's transaction) placed on idle live nodes of its cluster, its
    jobs sent once the transaction commits; False when there are too few."""
    idle = list(
        Node.objects.select_for_update().filter(cluster_id=head.cluster_id, state=NodeState.IDLE).order_by("id")
    )
    if uses_docker(head.environment_spec):
        # Only nodes with a Docker engine can run it: the others are never sent one.
        idle = [node for node in idle if node.docker]
    alive = alive_node_ids([node.pk for node in idle])
    chosen = [node for node in idle if node.pk in alive][: head.node_count]
    if len(chosen) < head.node_count:
        return False
    head.dispatched_at = timezone.now()
    head.token_salt = secrets.token_hex(16)
    head.token_hash = hash_token(run_token(head.pk, head.token_salt))
    head.save(update_fields=["dispatched_at", "token_salt", "token_hash"])
    for rank, node in enumerate(chosen):
        node_assign(node, head.pk)
        placement_assign(run=head, node=node, node_rank=rank)
    assignments = [(node, rank) for rank, node in enumerate(chosen)]
    run_pk = head.pk
    transaction.on_commit(lambda: _enqueue(run_pk, assignments, new_keys=new_keys))
    return True


def _enqueue(run_pk: int, assignments: list[tuple[Node, int]], *, new_keys: bool = False) -> None:
    # Ids only: whoever can read Redis learns no secret from a job. The keys an earlier placement of
    # the run left go (with `new_keys`, every key of its id), and each job's key and its place in its
    # node's list are written, together (one transaction, one round trip).
    pipe = get_redis().pipeline()
    (clear_run_keys if new_keys else clear_dispatch_keys)(run_pk, pipe)
    for node, rank in assignments:
        pipe.set(redis_keys.node_job(run_pk, rank), node.pk, ex=JOB_KEY_SECONDS)
        pipe.rpush(redis_keys.node_jobs(node.pk), node_job_message(run_pk, rank))
    pipe.execute()


def node_job_message(run_pk: int, node_rank: int) -> str:
    """What a node's list holds for one job: ids, never a secret (runs/node_worker.py reads it)."""
    return json.dumps({"run": run_pk, "node_rank": node_rank})


def redispatch_lost_jobs() -> list[int]:
    """Runs whose job on some node is gone from Redis before that node started it: placed again
    when no node of theirs started (they keep their turn), failed saying why otherwise. Returns
    the ids of the runs placed again."""
    # A Slurm run has no job in Redis: Slurm holds it, and its hosts join as their tasks start.
    dispatched = (
        Run.objects.filter(status__in=ACTIVE_STATUSES, dispatched_at__lt=timezone.now() - LOST_JOB_GRACE)
        .exclude(cluster__provisioner=Provisioner.SLURM)
        .values_list("pk", flat=True)
    )
    waiting = list(
        RunNode.objects.filter(run_id__in=list(dispatched), state=PlacementState.ASSIGNED).select_related("node")
    )
    pipe = get_redis().pipeline(transaction=False)
    for placement in waiting:
        pipe.exists(redis_keys.node_job(placement.run_id, placement.node_rank))
    lost = [placement for placement, kept in zip(waiting, pipe.execute(), strict=True) if not kept]
    placed_again: list[int] = []
    for run_pk in sorted({placement.run_id for placement in lost}):
        if _undo_dispatch(run_pk):
            logger.warning("run %s: its jobs were lost with Redis's data; placing it again", run_pk)
            placed_again.append(run_pk)
            continue
        for placement in [p for p in lost if p.run_id == run_pk]:
            fail_run(run_pk, JOB_LOST.format(node=placement.node.name, rank=placement.node_rank))
            # That node will never run the job that would have freed it.
            placement_done(placement.run_id, placement.node_rank)
            node_set_idle(placement.node_id)
    for cluster_pk in set(Run.objects.filter(pk__in=placed_again).values_list("cluster_id", flat=True)):
        dispatch_cluster(cluster_pk)
    return placed_again


@transaction.atomic
def _undo_dispatch(run_pk: int) -> bool:
    """Take back a dispatch that no node started: its nodes are idle again and the run waits at
    its place in the queue. False when a node of the run has started (or the run moved on)."""
    run = Run.objects.select_for_update().get(pk=run_pk)
    placements = RunNode.objects.filter(run=run)
    if run.status != RunStatus.QUEUED or placements.exclude(state=PlacementState.ASSIGNED).exists():
        return False
    nodes_release(run.pk)
    placements.delete()
    run.dispatched_at = None
    run.token_salt = run.token_hash = ""
    run.save(update_fields=["dispatched_at", "token_salt", "token_hash"])
    return True


def dispatch_all() -> None:
    cluster_ids = (
        Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True)
        .values_list("cluster_id", flat=True)
        .distinct()
    )
    for cluster_pk in list(cluster_ids):
        dispatch_cluster(cluster_pk)
