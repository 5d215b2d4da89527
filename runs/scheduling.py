"""Placing queued runs on nodes: all of a run's nodes at once or none (gang scheduling).

Runs of a cluster start in submission order. When the run at the head of a cluster's queue
cannot get all its nodes, nothing behind it starts either: the nodes that free up are kept
for it, so a large run is never starved by a stream of small ones.
"""

from __future__ import annotations

import logging
import secrets

from django.db import transaction
from django.utils import timezone
from rq import Queue

from runs.models import Run, RunNode, RunStatus
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import alive_node_ids
from trainhub.environments.builders import uses_docker
from trainhub.redis_conn import get_redis
from trainhub.workspaces.selectors import hash_token

logger = logging.getLogger(__name__)

RUN_TOKEN_PREFIX = "thr_"


def node_queue(node: Node) -> Queue:
    return Queue(node.queue_name, connection=get_redis())


def dispatch_cluster(cluster_pk: int) -> list[int]:
    """Start as many queued runs of the cluster as its idle nodes allow; returns their ids."""
    started = []
    while True:
        placed = _place_head_run(cluster_pk)
        if placed is None:
            return started
        started.append(placed)


def _place_head_run(cluster_pk: int) -> int | None:
    with transaction.atomic():
        head = (
            Run.objects.select_for_update()
            .filter(cluster_id=cluster_pk, status=RunStatus.QUEUED, dispatched_at__isnull=True)
            .order_by("id")
            .first()
        )
        if head is None:
            return None
        idle = list(
            Node.objects.select_for_update()
            .filter(cluster_id=cluster_pk, state=NodeState.IDLE)
            .order_by("id")
        )
        if uses_docker(head.environment_spec):
            # Only nodes with a Docker engine can run it: the others are never sent one.
            idle = [node for node in idle if node.docker]
        alive = alive_node_ids([node.pk for node in idle])
        chosen = [node for node in idle if node.pk in alive][: head.node_count]
        if len(chosen) < head.node_count:
            return None
        now = timezone.now()
        token = RUN_TOKEN_PREFIX + secrets.token_urlsafe(24)
        head.dispatched_at = now
        head.token_hash = hash_token(token)
        head.save(update_fields=["dispatched_at", "token_hash"])
        for rank, node in enumerate(chosen):
            node.state = NodeState.BUSY
            node.current_run = head
            node.save(update_fields=["state", "current_run"])
            RunNode.objects.create(run=head, node=node, node_rank=rank)
        assignments = [(node, rank) for rank, node in enumerate(chosen)]
        run_pk = head.pk
        transaction.on_commit(lambda: _enqueue(run_pk, assignments, token))
        return run_pk


def _enqueue(run_pk: int, assignments: list[tuple[Node, int]], token: str) -> None:
    from runs.execution import clear_run_keys

    # A database restored or reset can hand out a run id again: start from clean Redis keys.
    clear_run_keys(run_pk)
    for node, rank in assignments:
        node_queue(node).enqueue(
            "runs.jobs.execute_run_on_node",
            run_pk,
            node.pk,
            rank,
            token,
            job_timeout=-1,
            result_ttl=600,
            failure_ttl=86400,
            job_id=f"run-{run_pk}-node-{rank}",
        )


def dispatch_all() -> None:
    cluster_ids = (
        Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True)
        .values_list("cluster_id", flat=True)
        .distinct()
    )
    for cluster_pk in list(cluster_ids):
        dispatch_cluster(cluster_pk)
