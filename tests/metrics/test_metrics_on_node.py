"""Metrics of real runs on a real node, submitted through the SDK, as a user does."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from metrics.models import MetricSeries
from runs.models import Run
from tests.browser.test_workspace_flows import sign_in
from tests.helpers.processes import run_folder, wait_until
from trainhub.sdk import Experiment
from trainhub.sdk.exceptions import RunFailedError

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).parent / "projects" / "metrics"


def config(ws, script: str, arguments=()):
    from trainhub.sdk import Environment, ScriptRunConfig
    from trainhub.sdk.compute import ComputeTarget

    return ScriptRunConfig(
        source_directory=str(PROJECT),
        script=script,
        arguments=list(arguments),
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )


def test_a_run_that_crashes_right_after_logging_keeps_every_point(ws, node):
    src = config(ws, "log_then_crash.py")
    run = Experiment(ws, name="metrics-crash").submit(src, show_progress=False)
    with pytest.raises(RunFailedError, match="crashed right after logging"):
        run.wait_for_completion()
    metrics = run.get_metrics()
    assert len(metrics["loss"]) == 10_000
    assert metrics["loss"][-1] == 1.0 / 10_000
    stored = MetricSeries.objects.get(run__run_id=run.id, name="loss")
    assert (stored.count, stored.last_step) == (10_000, 9_999)
    assert Run.objects.get(run_id=run.id).tags["purpose"] == "crash test"


@pytest.mark.browser
def test_the_run_page_charts_a_running_training_live(ws, node, page, live_url, tmp_path):
    run = Experiment(ws, name="metrics-live").submit(config(ws, "train_slowly.py", ["stop"]), show_progress=False)
    wait_until(
        lambda: MetricSeries.objects.filter(run__run_id=run.id, name="loss").exists(),
        180,
        message="the first loss",
    )
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/runs/{run.id}/")
    expect(page.locator("#run-status")).to_have_text("Running")
    last = page.locator('.metric-chart[data-name="loss"] h4 .last')
    expect(last).to_contain_text("pts")
    shown = int(last.inner_text().split("·")[1].split()[0])
    # New points arrive over the socket while the run runs: no reload.
    page.wait_for_function(
        "n => parseInt(document.querySelector('.metric-chart[data-name=\"loss\"] h4 .last')"
        ".textContent.split('·')[1]) >= n + 5",
        arg=shown,
        timeout=60_000,
    )
    (run_folder(run.id) / "stop").touch()  # the run's /tmp is its own: its folder is what both see
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    metrics = run.get_metrics()
    assert len(metrics["loss"]) == metrics["summary"]["steps"][0]
    assert metrics["loss"] == sorted(metrics["loss"], reverse=True)  # it trains
