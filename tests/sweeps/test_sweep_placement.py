"""A sweep's child is placed in the transaction that makes it when idle nodes are there for it, as a
run's submit places its run (runs/scheduling.py place_submitted); its node's job is sent as that
transaction commits. Real database and Redis; the node is a row with a heartbeat."""

from __future__ import annotations

from django.db import transaction

from runs.models import RunNode, RunStatus
from runs.scheduling import node_job_message
from sweeps import services
from sweeps.models import SweepChild
from tests.runs.builders import make_snapshot
from tests.runs.test_submit_placement import warm  # noqa: F401  (fixture)
from trainhub.compute.models import NodeState
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.sdk.train.hyperdrive import choice
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access


def submit_sweep(workspace, owner, cluster_name: str):
    return services.sweep_submit(
        access=Access(workspace, Role.OWNER),
        user=owner,
        experiment_name="tune",
        spec={
            "sampling": {"type": "grid", "space": {"lr": choice(0.1, 0.01)}},
            "primary_metric_name": "acc",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": 2,
            "max_concurrent_runs": 1,
        },
        run={
            "snapshot_sha256": make_snapshot(workspace).sha256,
            "compute_target": cluster_name,
            "environment": EnvironmentChoice("TrainHub-PyTorch-2.13-CPU", None, {"python": "3.11", "pip": []}),
            "script": "train.py",
        },
    )


def test_a_sweep_child_with_an_idle_node_is_placed_by_the_transaction_that_makes_it(workspace, owner, warm):  # noqa: F811
    cluster, node, jobs = warm
    with transaction.atomic():
        sweep = submit_sweep(workspace, owner, cluster.name)
        services.sweep_advance(sweep.pk)  # its first child, in this transaction
        (child,) = [row.run for row in SweepChild.objects.filter(sweep=sweep).select_related("run")]
        placed = list(RunNode.objects.filter(run=child).values_list("node_id", "node_rank"))
        sent_before_commit = jobs()
    assert placed == [(node.pk, 0)]
    assert sent_before_commit == [], "no job is sent before the run it names is committed"
    assert jobs() == [node_job_message(child.pk, 0).encode()]
    node.refresh_from_db()
    assert (node.state, node.current_run_id) == (NodeState.BUSY, child.pk)
    child.refresh_from_db()
    assert child.status == RunStatus.QUEUED and child.dispatched_at is not None and child.token_hash
    assert SweepChild.objects.filter(sweep=sweep).count() == 1  # one at a time, as the sweep says
