"""A node that takes its job records it in one transaction (runs/services.py placement_preparing):
its placement is preparing and, with the lead node's, the run is Preparing in its history; a run
canceled or ended before the pickup is read there, and not prepared; one canceled while its nodes
prepare is read in the transaction that would record its Starting (runs/services.py run_starting)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.execution import NodeExecution, execute_on_node
from runs.models import PlacementState, Run, RunNode, RunStatus
from runs.scheduling import LOST_JOB_GRACE, dispatch_cluster, node_job_message, redispatch_lost_jobs
from runs.services import placement_assign, placement_preparing, run_starting, run_stop, run_transition
from tests.runs.builders import make_cluster, make_run
from trainhub import redis_keys
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import node_assign, node_heartbeat
from trainhub.redis_conn import get_redis


def two_node_run(workspace):
    cluster = make_cluster(workspace, name="pair")
    run = make_run(workspace, cluster, node_count=2, dispatched_at=timezone.now())
    for rank in range(2):
        node = Node.objects.create(cluster=cluster, name=f"pair-{rank}", hostname="h", address="x", pid=1, cpus=1)
        placement_assign(run=run, node=node, node_rank=rank)
    return run


def states(run) -> list[str]:
    return list(RunNode.objects.filter(run=run).order_by("node_rank").values_list("state", flat=True))


def test_the_lead_nodes_pickup_is_one_transaction_and_shows_preparing(workspace, transactional_db):
    run = two_node_run(workspace)
    placement_preparing(run.pk, 1, lead=False)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert states(run) == [PlacementState.ASSIGNED, PlacementState.PREPARING]

    with CaptureQueriesContext(connection) as queries:
        placement_preparing(run.pk, 0, lead=True)
    statements = [query["sql"].split()[0] for query in queries.captured_queries]
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT" and statements.count("COMMIT") == 1, statements
    run.refresh_from_db()
    assert run.status == RunStatus.PREPARING
    assert [change.status for change in run.status_changes.order_by("at", "id")] == [
        RunStatus.QUEUED,
        RunStatus.PREPARING,
    ]
    assert states(run) == [PlacementState.PREPARING, PlacementState.PREPARING]


def test_a_run_canceled_before_the_pickup_stays_canceled(workspace, transactional_db):
    run = two_node_run(workspace)
    run_transition(run.pk, RunStatus.CANCELED, reason="Canceled by the user.")
    placement_preparing(run.pk, 0, lead=True)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert [change.status for change in run.status_changes.order_by("at", "id")] == [
        RunStatus.QUEUED,
        RunStatus.CANCELED,
    ]


def test_a_run_whose_cancel_was_asked_before_the_pickup_is_not_prepared(workspace, transactional_db):
    run = two_node_run(workspace)
    run_stop(run, reason="")  # dispatched: the cancel is the nodes' to carry out
    assert placement_preparing(run.pk, 0, lead=True) == RunStatus.CANCELED
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert states(run) == [PlacementState.ASSIGNED, PlacementState.ASSIGNED]


def test_a_node_ends_a_run_canceled_between_its_placing_and_its_pickup(workspace, transactional_db, settings, tmp_path):
    settings.TRAINHUB_NODE_WORK_DIR = str(tmp_path / "node-work")
    cluster = make_cluster(workspace, name="one")
    node = Node.objects.create(cluster=cluster, name="one-0", hostname="h", address="x", pid=1, cpus=1)
    run = make_run(workspace, cluster, dispatched_at=timezone.now())
    placement_assign(run=run, node=node, node_rank=0)
    node_assign(node, run.pk)
    run_stop(run, reason="")

    execute_on_node(run.pk, node, 0)

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert [change.status for change in run.status_changes.order_by("at", "id")] == [
        RunStatus.QUEUED,
        RunStatus.CANCELED,
    ]
    assert run.status_reason == "Canceled by the user."
    assert states(run) == [PlacementState.DONE]
    node.refresh_from_db()
    assert node.state == NodeState.IDLE


def test_a_run_canceled_while_its_nodes_prepare_does_not_start(workspace, transactional_db):
    run = two_node_run(workspace)
    assert placement_preparing(run.pk, 0, lead=True) is None
    run_stop(run, reason="")  # asked while the nodes prepare
    assert run_starting(run.pk) == RunStatus.CANCELED
    run.refresh_from_db()
    assert run.status == RunStatus.PREPARING


def test_a_prepared_run_is_starting_with_its_history_in_order(workspace, transactional_db):
    run = two_node_run(workspace)
    placement_preparing(run.pk, 0, lead=True)
    assert run_starting(run.pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.STARTING
    assert [change.status for change in run.status_changes.order_by("at", "id")] == [
        RunStatus.QUEUED,
        RunStatus.PREPARING,
        RunStatus.STARTING,
    ]


def test_a_job_taken_back_before_its_node_takes_it_up_touches_nothing_of_the_run(
    workspace, transactional_db, settings, tmp_path
):
    """Redis lost a job the node had just taken from its list (a restart), and the controller,
    finding the job gone and its placement not preparing, placed the run again, here on the other
    node: the first node's execution of the old job, begun before or after, changes nothing of the
    run, its new placement, the node that holds it or its job."""
    settings.TRAINHUB_NODE_WORK_DIR = str(tmp_path / "node-work")
    cluster = make_cluster(workspace, name="again")
    first, second = (
        Node.objects.create(cluster=cluster, name=f"again-{index}", hostname="h", address="x", pid=1, cpus=1)
        for index in range(2)
    )
    redis = get_redis()
    redis.delete(redis_keys.node_jobs(first.pk), redis_keys.node_jobs(second.pk))
    node_heartbeat(first)
    run = make_run(workspace, cluster)
    assert dispatch_cluster(cluster.pk) == [run.pk]
    assert RunNode.objects.get(run=run).node_id == first.pk
    begun_before = NodeExecution(run.pk, first, 0)  # the node took the job and read its run

    # Redis restarts: the job, the first node's heartbeat and its list are gone.
    redis.delete(redis_keys.node_job(run.pk, 0), redis_keys.node_jobs(first.pk), redis_keys.node_alive(first.pk))
    node_heartbeat(second)
    Run.objects.filter(pk=run.pk).update(dispatched_at=timezone.now() - LOST_JOB_GRACE * 2)
    assert redispatch_lost_jobs() == [run.pk]
    placed_again = RunNode.objects.get(run=run)
    assert placed_again.node_id == second.pk

    begun_before.execute()
    assert begun_before.taken_back
    assert execute_on_node(run.pk, first, 0) is False  # begun after: the run read as placed again

    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert [change.status for change in run.status_changes.all()] == [RunStatus.QUEUED]
    assert list(RunNode.objects.filter(run=run).values_list("node_id", "state")) == [
        (second.pk, PlacementState.ASSIGNED)
    ]
    second.refresh_from_db()
    assert (second.state, second.current_run_id) == (NodeState.BUSY, run.pk)
    assert redis.exists(redis_keys.node_job(run.pk, 0))
    assert redis.lrange(redis_keys.node_jobs(second.pk), 0, -1) == [node_job_message(run.pk, 0).encode()]
    redis.delete(redis_keys.node_jobs(second.pk), redis_keys.node_job(run.pk, 0))
