"""Concurrent submits and dispatchers: run numbers are never given twice, and gang scheduling
never gives a node to two runs or a run part of its nodes.

Marked `postgres`: `make test` runs these a second time against PostgreSQL, whose row locks
(SELECT ... FOR UPDATE) are what keeps them right there; SQLite serialises every writer.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from runs.models import Run, RunNode, RunStatus
from runs.scheduling import dispatch_cluster
from tests.runs.builders import make_cluster, make_run, make_snapshot
from trainhub import redis_keys
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import node_heartbeat
from trainhub.redis_conn import get_redis

pytestmark = pytest.mark.postgres


def test_concurrent_submits_get_distinct_run_numbers(live_url, workspace, owner_token, curated_env):
    """Ten clients submit five runs each to one new experiment at the same moment."""
    make_cluster(workspace, name="cpu-cluster")
    snapshot = make_snapshot(workspace)
    url = f"{live_url}/api/v1/workspaces/birds/experiments/race/runs"
    body = {
        "snapshot": snapshot.sha256,
        "compute_target": "cpu-cluster",
        "environment": {"name": "TrainHub-PyTorch-2.13-CPU"},
        "script": "train.py",
    }

    def client(_: int) -> list[int]:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {owner_token}"
            answers = [session.post(url, json=body, timeout=60) for _ in range(5)]
        assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
        return [a.json()["number"] for a in answers]

    with ThreadPoolExecutor(10) as pool:
        numbers = [n for batch in pool.map(client, range(10)) for n in batch]
    assert sorted(numbers) == list(range(1, 51))
    assert sorted(Run.objects.filter(experiment__name="race").values_list("number", flat=True)) == list(range(1, 51))


def dispatch_from_threads(cluster_pk: int, threads: int, rounds: int) -> None:
    """`threads` dispatchers, each on its own database connection, released at the same moment."""
    barrier = threading.Barrier(threads)

    def dispatcher() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                dispatch_cluster(cluster_pk)
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(dispatcher) for _ in range(threads)]:
            future.result()


def test_concurrent_dispatchers_place_whole_gangs_only(workspace, transactional_db, tmp_path):
    """Four dispatchers race over five idle nodes and four queued two-node runs."""
    cluster = make_cluster(workspace, name="gang", max_nodes=5)
    nodes = [
        Node.objects.create(cluster=cluster, name=f"gang-{i}-{tmp_path.name}", hostname="h", address="x", pid=1, cpus=1)
        for i in range(5)
    ]
    runs = [make_run(workspace, cluster, experiment="gang", node_count=2) for _ in range(4)]
    for node in nodes:
        node_heartbeat(node)
    try:
        dispatch_from_threads(cluster.pk, threads=4, rounds=20)
    finally:
        redis = get_redis()
        for node in nodes:
            redis.delete(redis_keys.node_jobs(node.pk))

    placed = [run for run in runs if Run.objects.get(pk=run.pk).dispatched_at is not None]
    # Submission order: the first two runs get four nodes, the fifth node waits for the third run.
    assert [run.pk for run in placed] == [runs[0].pk, runs[1].pk]
    assignments = list(RunNode.objects.filter(run__cluster=cluster).values_list("run_id", "node_id"))
    assert len(assignments) == 4
    assert len({node_id for _, node_id in assignments}) == 4, "a node was given to two runs"
    assert all(sum(1 for run_id, _ in assignments if run_id == run.pk) == 2 for run in placed)
    assert Node.objects.filter(cluster=cluster, state=NodeState.BUSY).count() == 4
    assert Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.QUEUED).count() == 4
