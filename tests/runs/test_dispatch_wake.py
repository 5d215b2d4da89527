"""A run that waits for nodes wakes the controller (it can add nodes to a local cluster, or find
some freed) instead of leaving it to the controller's next tick."""

from __future__ import annotations

import pytest

from runs.scheduling import dispatch_cluster
from tests.runs.builders import make_cluster, make_run
from trainhub import redis_keys
from trainhub.compute.models import Node
from trainhub.compute.services import node_heartbeat
from trainhub.redis_conn import get_redis


@pytest.fixture
def wake():
    redis = get_redis()
    redis.delete(redis_keys.controller_wake())
    yield lambda: redis.lrange(redis_keys.controller_wake(), 0, -1)
    redis.delete(redis_keys.controller_wake())


def idle_node(cluster, name: str) -> Node:
    node = Node.objects.create(cluster=cluster, name=name, hostname="h", address="x", pid=1, cpus=1)
    node_heartbeat(node)
    return node


def test_a_run_short_of_nodes_wakes_the_controller_once(workspace, transactional_db, wake):
    cluster = make_cluster(workspace, name="elastic", provisioner="local", max_nodes=3)
    idle_node(cluster, "elastic-0")
    runs = [make_run(workspace, cluster, node_count=2) for _ in range(2)]
    assert dispatch_cluster(cluster.pk) == []
    dispatch_cluster(cluster.pk)
    assert wake() == [b"1"]  # one wake-up however often it is asked for
    assert all(run.dispatched_at is None for run in runs)


def test_a_run_placed_at_once_does_not_wake_it(workspace, transactional_db, wake):
    cluster = make_cluster(workspace, name="warm", max_nodes=2)
    nodes = [idle_node(cluster, f"warm-{i}") for i in range(2)]
    run = make_run(workspace, cluster, node_count=2)
    try:
        assert dispatch_cluster(cluster.pk) == [run.pk]
        assert wake() == []
    finally:
        for node in nodes:
            get_redis().delete(redis_keys.node_jobs(node.pk))
