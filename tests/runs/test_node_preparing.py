"""A node that takes its job records it in one transaction (runs/services.py placement_preparing):
its placement is preparing and, with the lead node's, the run is Preparing in its history."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.models import PlacementState, RunNode, RunStatus
from runs.services import placement_assign, placement_preparing, run_transition
from tests.runs.builders import make_cluster, make_run
from trainhub.compute.models import Node


def two_node_run(workspace):
    cluster = make_cluster(workspace, name="pair")
    run = make_run(workspace, cluster, node_count=2)
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
