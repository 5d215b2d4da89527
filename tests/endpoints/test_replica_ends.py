"""What the end of a replica's run does to its endpoint: a serving replica that died is replaced, one
that never answered fails the deployment, and one that keeps dying stops being replaced."""

from __future__ import annotations

from django.utils import timezone

from endpoints.models import Endpoint, Replica
from endpoints.services import CRASH_LOOP_ENDS, NEVER_READY, replica_run_ended
from runs.models import Run, RunStatus
from runs.services import fail_run
from tests.runs.builders import make_cluster, make_run, make_snapshot


def endpoint_with_replica(workspace, owner, *, ready: bool) -> tuple[Endpoint, Run]:
    cluster = make_cluster(workspace, name="serve")
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name="aci-birds",
        state="Healthy",
        cluster=cluster,
        snapshot=make_snapshot(workspace),
        entry_script="score.py",
        environment_name="TrainHub-PyTorch-2.13-CPU",
        environment_spec={"python": "3.11"},
        primary_key_hash="p" * 64,
        secondary_key_hash="s" * 64,
        created_by=owner,
    )
    return endpoint, died(endpoint, cluster, ready=ready)


def died(endpoint: Endpoint, cluster, *, ready: bool) -> Run:
    run = make_run(
        endpoint.workspace,
        cluster=cluster,
        experiment="endpoint-aci-birds",
        status=RunStatus.FAILED,
        ended_at=timezone.now(),
        status_reason="Rank 0 exited with code -9.",
        tags={"endpoint": "aci-birds"},
    )
    Replica.objects.create(
        endpoint=endpoint,
        run=run,
        generation=1,
        state="ready" if ready else "starting",
        ready_at=timezone.now() if ready else None,
    )
    return run


def test_a_serving_replica_that_died_is_replaced(workspace, owner):
    endpoint, run = endpoint_with_replica(workspace, owner, ready=True)
    replica_run_ended(run)
    endpoint.refresh_from_db()
    assert (endpoint.state, endpoint.restarts) == ("Unhealthy", 1)
    assert "stopped while serving (Rank 0 exited with code -9.)" in endpoint.error
    new = endpoint.replicas.get(state="starting")
    assert new.run.status == RunStatus.QUEUED and new.run.experiment.name == "endpoint-aci-birds"


def test_a_replica_that_never_answered_fails_the_deployment(workspace, owner):
    endpoint, run = endpoint_with_replica(workspace, owner, ready=False)
    replica_run_ended(run)
    endpoint.refresh_from_db()
    assert endpoint.state == "Failed"
    assert endpoint.error == NEVER_READY.format(reason="Rank 0 exited with code -9.")
    assert not endpoint.replicas.filter(state="starting").exists()


def test_a_replica_that_keeps_dying_is_not_replaced_forever(workspace, owner):
    endpoint, run = endpoint_with_replica(workspace, owner, ready=True)
    for _ in range(CRASH_LOOP_ENDS - 1):
        replica_run_ended(run)
        run = died(endpoint, endpoint.cluster, ready=True)
        Replica.objects.filter(endpoint=endpoint, run__status=RunStatus.QUEUED).delete()
    replica_run_ended(run)
    endpoint.refresh_from_db()
    assert endpoint.state == "Failed" and endpoint.restarts == CRASH_LOOP_ENDS - 1
    assert endpoint.error.startswith(f"Replicas stopped {CRASH_LOOP_ENDS} times within 10 minutes")
    assert not endpoint.replicas.filter(state="starting").exists()


def test_the_end_of_a_serving_replicas_run_replaces_it(workspace, owner):
    # Through the run's own transition: the endpoints app hears of the end by its subscription.
    endpoint, died_run = endpoint_with_replica(workspace, owner, ready=True)
    Replica.objects.filter(run=died_run).delete()
    run = make_run(
        workspace,
        cluster=endpoint.cluster,
        experiment="endpoint-aci-birds",
        status=RunStatus.RUNNING,
        tags={"endpoint": "aci-birds"},
    )
    Replica.objects.create(endpoint=endpoint, run=run, generation=1, state="ready", ready_at=timezone.now())
    fail_run(run.pk, "Rank 0 exited with code -9.")
    endpoint.refresh_from_db()
    assert (endpoint.state, endpoint.restarts) == ("Unhealthy", 1)
    assert "stopped while serving (Rank 0 exited with code -9.)" in endpoint.error
    assert endpoint.replicas.get(state="starting").run.status == RunStatus.QUEUED
