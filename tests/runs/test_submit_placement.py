"""A submit places its run in its own transaction when the run heads its cluster's queue and idle
nodes are there (runs/scheduling.py place_submitted); otherwise the controller's placing does, as
for every other run. Real database and Redis; the nodes are rows with a heartbeat."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from django.db import connection, transaction

from runs.models import LogChunk, Run, RunNode, RunStatus
from runs.scheduling import node_job_message
from runs.services import SUBMIT_STREAM, log_append, run_submit
from tests.runs.builders import make_cluster, make_run, make_snapshot
from trainhub import redis_keys
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import node_heartbeat
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.environments.spec import USER_MANAGED
from trainhub.redis_conn import get_redis
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access


@pytest.fixture
def warm(workspace, transactional_db):
    """A cluster with one idle live node; the node's job list (empty), emptied again after."""
    cluster = make_cluster(workspace, name="warm", max_nodes=2)
    node = Node.objects.create(cluster=cluster, name="warm-0", hostname="h", address="x", pid=1, cpus=1)
    node_heartbeat(node)
    jobs = redis_keys.node_jobs(node.pk)
    get_redis().delete(jobs)
    yield cluster, node, lambda: get_redis().lrange(jobs, 0, -1)
    get_redis().delete(jobs)


def submit(workspace) -> Run:
    return run_submit(
        access=Access(workspace=workspace, role=Role.CONTRIBUTOR),
        user=None,
        experiment_name="placing",
        snapshot_sha256=make_snapshot(workspace).sha256,
        compute_target="warm",
        environment=EnvironmentChoice(name="TrainHub-PyTorch-2.13-CPU", version=1, spec={"python": "3.11"}),
        script="train.py",
    )


def test_a_run_with_an_idle_node_is_placed_by_its_submits_own_transaction(workspace, warm):
    cluster, node, jobs = warm
    with transaction.atomic():
        run = submit(workspace)
        placed = list(RunNode.objects.filter(run=run).values_list("node_id", "node_rank"))
        sent_before_commit = jobs()
    assert placed == [(node.pk, 0)]
    assert sent_before_commit == [], "no job is sent before the run it names is committed"
    assert jobs() == [node_job_message(run.pk, 0).encode()]
    node.refresh_from_db()
    assert (node.state, node.current_run_id) == (NodeState.BUSY, run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.dispatched_at is not None and run.token_hash
    assert [change.status for change in run.status_changes.all()] == [RunStatus.QUEUED]


def test_a_submit_behind_a_run_waiting_for_nodes_is_not_placed_ahead_of_it(workspace, warm):
    cluster, node, jobs = warm
    waiting = make_run(workspace, cluster, node_count=2)  # more nodes than are idle
    run = submit(workspace)
    assert Run.objects.get(pk=run.pk).dispatched_at is None
    assert Run.objects.get(pk=waiting.pk).dispatched_at is None
    assert Node.objects.get(pk=node.pk).state == NodeState.IDLE
    assert jobs() == []


def test_a_submit_rolled_back_after_its_placing_leaves_the_node_idle_and_sends_nothing(workspace, warm):
    cluster, node, jobs = warm
    with pytest.raises(RuntimeError), transaction.atomic():
        submit(workspace)
        assert RunNode.objects.exists()
        raise RuntimeError("refused after the run was made")
    assert not Run.objects.filter(experiment__name="placing").exists()
    assert Node.objects.get(pk=node.pk).state == NodeState.IDLE
    assert jobs() == []


@pytest.mark.postgres  # make test runs it against PostgreSQL too: the nodes' row locks decide
def test_submits_racing_for_idle_nodes_never_get_one_node_twice(workspace, warm):
    cluster, first, jobs = warm
    second = Node.objects.create(cluster=cluster, name="warm-1", hostname="h", address="x", pid=1, cpus=1)
    node_heartbeat(second)
    make_snapshot(workspace)
    start = threading.Barrier(4)

    def submitter() -> int:
        try:
            start.wait()
            return submit(workspace).pk
        finally:
            connection.close()

    try:
        with ThreadPoolExecutor(4) as pool:
            runs = [future.result() for future in [pool.submit(submitter) for _ in range(4)]]
        placements = list(RunNode.objects.filter(run_id__in=runs).values_list("run_id", "node_id"))
        assert len(placements) == 2 and {node for _, node in placements} == {first.pk, second.pk}, placements
        sent = [*jobs(), *get_redis().lrange(redis_keys.node_jobs(second.pk), 0, -1)]
        assert sorted(sent) == sorted(node_job_message(run, 0).encode() for run, _ in placements)
        waiting = Run.objects.filter(pk__in=runs, dispatched_at__isnull=True)
        assert waiting.count() == 2 and all(run.status == RunStatus.QUEUED for run in waiting)
    finally:
        get_redis().delete(redis_keys.node_jobs(second.pk))


@pytest.fixture
def redis_trips(monkeypatch):
    """How many times this process sent Redis a command or a pipeline, while the test runs."""
    trips = [0]
    command, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return command(self, *args, **kwargs)

    def counted_pipeline(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return pipeline(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)
    return trips


def test_a_run_placed_by_its_submit_starts_from_clean_keys_sent_with_its_job(workspace, warm, redis_trips):
    cluster, node, jobs = warm
    with transaction.atomic():
        run = submit(workspace)
        # What a run of the same id left in Redis before the database was reset.
        left = [redis_keys.run_abort(run.pk), redis_keys.run_rendezvous(run.pk), redis_keys.run_log_sequence(run.pk)]
        for key in left:
            get_redis().set(key, "99")
        get_redis().rpush(redis_keys.run_peers_done(run.pk), 1)
        left.append(redis_keys.run_peers_done(run.pk))
        redis_trips[0] = 0
    assert redis_trips[0] == 1, "the keys are cleared in the pipeline that sends the job"
    assert jobs() == [node_job_message(run.pk, 0).encode()]
    assert get_redis().exists(*left) == 0
    log_append(run.pk, "driver", ["first"])
    assert list(LogChunk.objects.filter(run=run).values_list("first_seq", "text")) == [(1, "first")]


def test_a_submits_warning_is_its_runs_first_line_when_its_submit_places_it(workspace, warm):
    cluster, node, jobs = warm
    with transaction.atomic():
        run = run_submit(
            access=Access(workspace=workspace, role=Role.CONTRIBUTOR),
            user=None,
            experiment_name="placing",
            snapshot_sha256=make_snapshot(workspace).sha256,
            compute_target="warm",
            environment=EnvironmentChoice(name="mine", version=1, spec={"python": "3.11", USER_MANAGED: True}),
            script="train.py",
        )
        get_redis().set(redis_keys.run_log_sequence(run.pk), "99")  # left by a run of the same id
    assert jobs() == [node_job_message(run.pk, 0).encode()]
    log_append(run.pk, "driver", ["from the node"])
    lines = list(LogChunk.objects.filter(run=run).order_by("first_seq").values_list("first_seq", "stream"))
    assert lines == [(1, SUBMIT_STREAM), (2, "driver")]
