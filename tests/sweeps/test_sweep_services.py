"""A sweep on the server, driven as the nodes and runs drive it (children ending, metrics logged),
without nodes: the database is all a sweep keeps, so any process can move it on."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from metrics.services import metrics_ingest, parse_batch
from runs import events
from runs.models import Run, RunStatus
from runs.services import run_cancel, run_transition
from sweeps import services
from sweeps.models import Sweep, SweepChild
from tests.conftest import api_client, issue_token
from tests.runs.builders import make_cluster, make_snapshot
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.sdk.train.hyperdrive import BanditPolicy, choice, uniform
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db(transaction=True)


def submit(workspace, owner, *, sampling, policy=None, total=4, concurrent=2, minutes=60):
    make_cluster(workspace, name="cpu-cluster")
    snapshot = make_snapshot(workspace)
    return services.sweep_submit(
        access=Access(workspace, Role.OWNER),
        user=owner,
        experiment_name="tune",
        spec={
            "sampling": sampling,
            "policy": policy,
            "primary_metric_name": "acc",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": total,
            "max_concurrent_runs": concurrent,
            "max_duration_minutes": minutes,
        },
        run={
            "snapshot_sha256": snapshot.sha256,
            "compute_target": "cpu-cluster",
            "environment": EnvironmentChoice("TrainHub-PyTorch-2.13-CPU", None, {"python": "3.11", "pip": []}),
            "script": "train.py",
            "arguments": ["--epochs", "2"],
        },
    )


def children(sweep) -> list[Run]:
    return [child.run for child in SweepChild.objects.filter(sweep=sweep).select_related("run")]


def finish(run: Run, status: str = RunStatus.COMPLETED) -> None:
    for step in (RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.FINALIZING, status):
        run_transition(run.pk, step)


def log(workspace, run: Run, values: list[float]) -> None:
    batch = parse_batch({"rank": 0, "metrics": [{"name": "acc", "values": values}]})
    metrics_ingest(access=Access(workspace, Role.CONTRIBUTOR), run=run, batch=batch)


GRID = {"type": "grid", "space": {"lr": choice(0.1, 0.01), "momentum": choice(0.9, 0.99)}}


def test_a_grid_sweep_keeps_its_concurrency_and_ends_when_every_child_did(workspace, owner):
    sweep = submit(workspace, owner, sampling=GRID, total=10)
    parent = sweep.parent
    assert parent.status == RunStatus.RUNNING and sweep.max_total_runs == 4
    first = children(sweep)
    assert [run.arguments for run in first] == [
        ["--epochs", "2", "--lr", "0.1", "--momentum", "0.9"],
        ["--epochs", "2", "--lr", "0.1", "--momentum", "0.99"],
    ]
    assert first[0].parent_id == parent.pk and first[0].tags == {"lr": "0.1", "momentum": "0.9"}
    assert first[0].parameters == {"epochs": "2", "lr": "0.1", "momentum": "0.9"}
    services.sweep_advance(sweep.pk)  # again, from any process: nothing more starts
    assert len(children(sweep)) == 2
    finish(first[0])
    assert len(children(sweep)) == 3
    for run in children(sweep):
        finish(Run.objects.get(pk=run.pk))
    finish(children(sweep)[3])
    made = children(sweep)
    assert len(made) == 4 and all(run.status == RunStatus.COMPLETED for run in made)
    parent.refresh_from_db()
    assert parent.status == RunStatus.COMPLETED and parent.status_reason == "max_total_runs (4) reached."
    assert Run.objects.filter(experiment=parent.experiment).count() == 5


def test_bandit_cancels_a_child_far_off_the_best_and_not_one_within_slack(workspace, owner):
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=1).to_json()
    sweep = submit(
        workspace,
        owner,
        sampling={"type": "random", "space": {"lr": uniform(0.01, 0.1)}},
        policy=policy,
        total=3,
        concurrent=3,
    )
    best, close, far = children(sweep)
    log(workspace, best, [0.5, 0.9])
    log(workspace, close, [0.5, 0.85])
    log(workspace, far, [0.5, 0.4])
    for run in (best, close, far):
        run.refresh_from_db()
    assert far.status == RunStatus.CANCELED
    assert far.status_reason == "early termination: BanditPolicy, slack 0.1 at interval 2"
    assert best.status == close.status == RunStatus.QUEUED


def test_cancel_of_the_parent_ends_every_child_and_starts_no_more(workspace, owner):
    sweep = submit(workspace, owner, sampling=GRID)
    parent = run_cancel(access=Access(workspace, Role.CONTRIBUTOR), run=sweep.parent)
    made = children(sweep)
    assert len(made) == 2
    assert all(run.status == RunStatus.CANCELED and run.status_reason == services.CHILD_CANCELED for run in made)
    assert parent.status == RunStatus.CANCELED


def test_the_sweep_endpoints_are_for_members_of_its_workspace_only(workspace, owner, outsider, other_workspace):
    sweep = submit(workspace, owner, sampling=GRID)
    path = f"/api/v1/workspaces/birds/sweeps/{sweep.parent.run_id}"
    member = api_client(issue_token(workspace, owner))
    shown = member.get(path).json()
    assert [c["parameters"] for c in shown["children"]] == [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.1, "momentum": 0.99}]
    stranger = api_client(issue_token(other_workspace, outsider))
    assert stranger.get(path).status_code == 404
    assert stranger.get(f"/api/v1/workspaces/elsewhere/sweeps/{sweep.parent.run_id}").status_code == 404
    assert stranger.post(f"/api/v1/workspaces/elsewhere/sweeps/{sweep.parent.run_id}/cancel").status_code == 404
    assert member.get(f"/api/v1/workspaces/birds/sweeps/{children(sweep)[0].run_id}").status_code == 404
    # A child's own token (what its script holds) reaches none of them, nor its parent.
    token = "thr_" + secrets.token_urlsafe(24)
    Run.objects.filter(pk=children(sweep)[0].pk).update(token_hash=hash_token(token), status=RunStatus.RUNNING)
    in_run = api_client(token)
    assert in_run.get(path).status_code == 403
    assert in_run.post(path + "/cancel").status_code == 403
    assert in_run.post(f"/api/v1/workspaces/birds/runs/{sweep.parent.run_id}/cancel").status_code == 404
    sweep.parent.refresh_from_db()
    assert sweep.parent.status == RunStatus.RUNNING
    assert not Run.objects.filter(parent=sweep.parent, status=RunStatus.CANCELED).exists()


@pytest.mark.postgres
def test_advancers_racing_make_each_child_once_and_keep_the_concurrency(workspace, owner):
    """Six processes' worth of advancers (threads, each on its own connection) released at once over a
    sweep with room for five more children: five are made, each index once."""
    sweep = submit(
        workspace, owner, sampling={"type": "random", "space": {"lr": uniform(0, 1)}}, total=20, concurrent=1
    )
    Sweep.objects.filter(pk=sweep.pk).update(max_concurrent_runs=6)
    barrier = threading.Barrier(6)

    def advancer() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                services.sweep_advance(sweep.pk)
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(advancer) for _ in range(6)]:
            future.result()
    indices = list(SweepChild.objects.filter(sweep=sweep).values_list("index", flat=True))
    assert sorted(indices) == list(range(6))
    assert Run.objects.filter(parent=sweep.parent).count() == 6
    numbers = list(Run.objects.filter(experiment=sweep.parent.experiment).values_list("number", flat=True))
    assert sorted(numbers) == list(range(1, 8))


def test_max_duration_cancels_the_children_still_running_and_ends_the_sweep(workspace, owner):
    sweep = submit(workspace, owner, sampling=GRID, minutes=1)
    finish(children(sweep)[0])
    Run.objects.filter(pk=sweep.parent_id).update(started_at=timezone.now() - timedelta(minutes=2))
    events.controller_tick.notify()  # as the controller's loop does, every few seconds
    made = children(sweep)
    assert [run.status for run in made] == [RunStatus.COMPLETED, RunStatus.CANCELED, RunStatus.CANCELED]
    assert made[2].status_reason == "Canceled: its sweep reached max_duration_minutes (1)."
    sweep.parent.refresh_from_db()
    assert sweep.parent.status == RunStatus.COMPLETED
    assert sweep.parent.status_reason == services.DURATION_REACHED.format(minutes=1)


def test_a_bayesian_sweep_samples_each_child_from_the_ended_ones(workspace, owner):
    sampling = {"type": "bayesian", "space": {"lr": uniform(0.001, 0.1), "act": choice("relu", "tanh")}}
    sweep = submit(workspace, owner, sampling=sampling, total=4, concurrent=1)
    for step in range(4):
        (child,) = [run for run in children(sweep) if run.status == RunStatus.QUEUED]
        parameters = SweepChild.objects.get(run=child).parameters
        assert 0.001 <= parameters["lr"] <= 0.1 and parameters["act"] in ("relu", "tanh")
        assert child.arguments[-4:] == ["--lr", str(parameters["lr"]), "--act", parameters["act"]]
        log(workspace, child, [1 - parameters["lr"]])
        finish(child)
        assert len(children(sweep)) == min(step + 2, 4)
    sweep.parent.refresh_from_db()
    assert sweep.parent.status == RunStatus.COMPLETED
