"""Sweeps on a live TrainHub with real nodes, driven from the SDK as the notebook does: the
concurrency limit, a Bandit policy, cancel, a node, the controller and the web server restarted
mid-sweep, and the best child's model registered."""

from __future__ import annotations

import os
import re
import signal
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers.processes import ControllerProcess, NodeProcess, wait_until
from tests.helpers.site import module_site

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).parent / "projects" / "child"
NODES = 3


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweeps")
    with module_site(django_db_blocker, live_server_process, folder) as site:
        from trainhub.sdk import ComputeTarget, Workspace
        from trainhub.sdk.compute import AmlCompute

        ws = Workspace.get("birds", url=site.url, token=site.token)
        config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=NODES)
        ComputeTarget.create(ws, "sweep-cluster", config)
        site.start_nodes("sweep-cluster", NODES)
        yield site, ws


def src(ws, *arguments):
    from trainhub.sdk import Environment, ScriptRunConfig

    return ScriptRunConfig(
        source_directory=str(PROJECT),
        script="child.py",
        arguments=list(arguments),
        compute_target="sweep-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )


def most_running_at_once(site, parent_run_id: str) -> int:
    """From the children's status history: the most that were Running (or past it, not ended) at once."""
    from runs.models import Run

    with site.blocker.unblock():
        spans = []
        for child in Run.objects.filter(parent__run_id=parent_run_id).prefetch_related("status_changes"):
            changes = {change.status: change.at for change in child.status_changes.all()}
            if "Running" in changes:
                spans.append((changes["Running"], child.ended_at or datetime.max))
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_database_is_there(db):
    """module_site needs one test of the module that asks for the test database."""


def test_a_grid_sweep_runs_at_most_max_concurrent_children_and_its_best_model_is_registered(site, capsys, tmp_path):
    from trainhub.sdk import Experiment
    from trainhub.sdk.train.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    _, ws = site
    config = HyperDriveConfig(
        run_config=src(ws, "--steps", "4", "--pause", "0.5"),
        hyperparameter_sampling=GridParameterSampling({"lr": choice(0.01, 0.1), "momentum": choice(0.9, 0.5)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=4,
        max_concurrent_runs=2,
    )
    hd_run = Experiment(ws, "grid").submit(config)
    hd_run.wait_for_completion(show_output=True)
    shown = capsys.readouterr().out
    assert hd_run.get_status() == "Completed"
    children = hd_run.get_children()
    assert len(children) == 4 and all(child.get_status() == "Completed" for child in children)
    assert most_running_at_once(site[0], hd_run.id) == 2
    for index in range(4):
        assert re.search(rf"Child {index} \(\S+\) started: lr=0\.\d+ momentum=0\.\d", shown)
        assert re.search(rf"Child {index} \(\S+\) ended Completed: accuracy [\d.]+", shown)
    ranked = hd_run.get_children_sorted_by_primary_metric()
    assert ranked[0]["hyperparameters"] == {"lr": 0.01, "momentum": 0.9} and ranked[0]["best_primary_metric"] == 1.0
    assert [entry["best_primary_metric"] for entry in ranked] == sorted(
        (entry["best_primary_metric"] for entry in ranked), reverse=True
    )
    details = children[0].get_details()
    assert details["arguments"][-4:] == ["--lr", "0.01", "--momentum", "0.9"]
    assert details["tags"] == {"lr": "0.01", "momentum": "0.9"}
    metrics = hd_run.get_metrics()
    assert set(metrics) == {child.id for child in children}
    assert all(len(child_metrics["accuracy"]) == 4 for child_metrics in metrics.values())

    best_run = hd_run.get_best_run_by_primary_metric()
    assert best_run.id == ranked[0]["run_id"]
    model = best_run.register_model(model_name="sweep-best", model_path="outputs/model.pt")
    assert model.version == 1 and model.run_id == best_run.id
    downloaded = model.download(target_dir=str(tmp_path))
    assert Path(downloaded).read_text() == "lr=0.01 momentum=0.9\n"


def test_a_bandit_policy_cancels_the_child_far_off_the_best_and_not_the_one_within_slack(site):
    from trainhub.sdk import Experiment
    from trainhub.sdk.train.hyperdrive import (
        BanditPolicy,
        HyperDriveConfig,
        PrimaryMetricGoal,
        RandomParameterSampling,
        choice,
    )

    _, ws = site
    # With this seed, the children draw 0.3, 1.0 and 0.95 (tests/sweeps/test_sampling.py shows the draws).
    sampling = RandomParameterSampling({"quality": choice(1.0, 0.95, 0.3)}, properties={"rngseed": 0})
    config = HyperDriveConfig(
        run_config=src(ws, "--steps", "30", "--pause", "0.3"),
        hyperparameter_sampling=sampling,
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=3,
        max_concurrent_runs=3,
    )
    hd_run = Experiment(ws, "bandit").submit(config)
    hd_run.wait_for_completion()
    by_quality = {
        entry["hyperparameters"]["quality"]: entry for entry in hd_run.get_children_sorted_by_primary_metric()
    }
    assert set(by_quality) == {1.0, 0.95, 0.3}
    assert by_quality[1.0]["status"] == by_quality[0.95]["status"] == "Completed"
    far = [child for child in hd_run.get_children() if child.id == by_quality[0.3]["run_id"]][0]
    details = far.get_details()
    assert details["status"] == "Canceled"
    assert re.fullmatch(r"early termination: BanditPolicy, slack 0\.1 at interval \d+", details["status_reason"])
    assert len(far.get_metrics()["accuracy"]) < 30
    assert hd_run.get_status() == "Completed"


def test_cancel_of_the_sweep_ends_every_child_and_starts_no_more(site):
    from trainhub.sdk import Experiment
    from trainhub.sdk.train.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    _, ws = site
    config = HyperDriveConfig(
        run_config=src(ws, "--steps", "400", "--pause", "0.3"),
        hyperparameter_sampling=GridParameterSampling({"lr": choice(0.01, 0.02, 0.03, 0.04, 0.05)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_concurrent_runs=2,
    )
    hd_run = Experiment(ws, "cancel").submit(config)
    wait_until(
        lambda: [c.get_status() for c in hd_run.get_children()] == ["Running", "Running"],
        90,
        interval=0.3,
        message="two children running",
    )
    hd_run.cancel()
    hd_run.wait_for_completion()
    assert hd_run.get_status() == "Canceled"
    children = hd_run.get_children()
    assert len(children) == 2
    assert [child.get_details()["status_reason"] for child in children] == ["Canceled with its sweep."] * 2


def test_a_node_the_controller_and_the_web_server_restarted_mid_sweep_lose_no_child_and_start_none_twice(
    site, live_server_process, tmp_path
):
    """A node is killed while it runs a child, and the controller and the web server are stopped:
    the child fails as "node lost" once a new controller reaps it, and the sweep goes on with a new
    node from the state in the database, each child made once."""
    from runs.models import Run
    from sweeps.models import SweepChild
    from trainhub.compute.models import ComputeCluster
    from trainhub.sdk import Experiment
    from trainhub.sdk.train.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    live, ws = site
    controller = ControllerProcess(tmp_path).start()
    config = HyperDriveConfig(
        run_config=src(ws, "--steps", "10", "--pause", "0.5"),
        hyperparameter_sampling=GridParameterSampling({"lr": choice(0.01, 0.02, 0.03, 0.04, 0.05)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_concurrent_runs=2,
    )
    hd_run = Experiment(ws, "restart").submit(config)
    wait_until(
        lambda: "Running" in [c.get_status() for c in hd_run.get_children()],
        90,
        interval=0.3,
        message="a child running",
    )
    with live.blocker.unblock():
        victim_name = (
            Run.objects.filter(parent__run_id=hd_run.id, status="Running")
            .values_list("run_nodes__node__name", flat=True)
            .first()
        )
        cluster = ComputeCluster.objects.select_related("workspace").get(name="sweep-cluster")
    victim = next(node for node in live.nodes if node.name == victim_name)
    # Frozen at once, killed once the controller and the web server are down: stopping them takes
    # seconds on a busy machine, and a node still running meanwhile saw its child end Completed.
    os.kill(victim.process.pid, signal.SIGSTOP)
    controller.stop()
    live_server_process.stop()
    victim.kill()
    live_server_process.start()
    controller = ControllerProcess(tmp_path).start()
    try:
        live.nodes.append(NodeProcess(cluster, live.log_dir, TRAINHUB_NODE_SERVER_URL=live.url).start(wait=False))
        hd_run.wait_for_completion()
    finally:
        controller.stop()
    statuses = [child.get_details() for child in hd_run.get_children()]
    assert [d["status_reason"] for d in statuses if d["status"] == "Failed"] == ["node lost"]
    assert sorted(d["status"] for d in statuses) == ["Completed"] * 4 + ["Failed"]
    with live.blocker.unblock():
        assert list(SweepChild.objects.filter(sweep__parent__run_id=hd_run.id).values_list("index", flat=True)) == [
            0,
            1,
            2,
            3,
            4,
        ]
        assert Run.objects.filter(experiment__name="restart").count() == 6
    assert hd_run.get_status() == "Completed"
