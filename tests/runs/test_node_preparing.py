"""A node that takes its job records it in one transaction (runs/services.py placement_preparing):
its placement is preparing and, with the lead node's, the run is Preparing in its history; a run
canceled or ended before the pickup is read there, and not prepared; one canceled while its nodes
prepare is read in the transaction that would record its Starting (runs/services.py run_starting)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.execution import execute_on_node
from runs.models import PlacementState, RunNode, RunStatus
from runs.services import placement_assign, placement_preparing, run_starting, run_stop, run_transition
from tests.runs.builders import make_cluster, make_run
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import node_assign


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
