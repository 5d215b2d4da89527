"""Screenshots of the runs table, the compare view, a run page and a cluster page, for the README.

They are written to docs/screenshots/ by `make screenshots` (TRAINHUB_SCREENSHOTS set); in
`make test` they go to the test's own folder, so that the pages are still drawn and checked.
The run page is a real run's on a real node, so that its system metrics exist; the cluster page shows
that node, live, with its load."""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from runs.models import Run, RunStatus
from runs.system_metrics import CPU, MEMORY
from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client
from tests.helpers.processes import NodeProcess
from tests.metrics.builders import post_batch, running_run, series_body
from tests.metrics.test_metrics_on_node import config
from tests.runs.conftest import cluster, curated_env, ws  # noqa: F401  (fixtures used here)
from trainhub.sdk import Experiment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def folder(tmp_path: Path) -> Path:
    return HERE if os.environ.get("TRAINHUB_SCREENSHOTS") else tmp_path


def sweep(workspace) -> list[Run]:
    runs = []
    for index, (lr, momentum) in enumerate([(0.1, 0.9), (0.01, 0.9), (0.01, 0.5), (0.001, 0.9)]):
        run, token = running_run(
            workspace, experiment="pytorch-birds", arguments=["--lr", lr, "--momentum", momentum, "--epochs", 30]
        )
        speed = 0.25 + index * 0.1
        losses = [2.3 * math.exp(-speed * step / 3) + 0.05 * index for step in range(30)]
        accuracy = [min(0.98, 0.1 + (1 - math.exp(-speed * step / 4)) * (0.9 - 0.04 * index)) for step in range(30)]
        post_batch(api_client(token), run, series_body("loss", losses))
        post_batch(api_client(token), run, series_body("accuracy", accuracy))
        post_batch(api_client(token), run, {"tags": {"optimizer": "adam" if index == 2 else "sgd"}})
        started = timezone.now() - timedelta(minutes=40 - 10 * index)
        if index < 3:
            ended = started + timedelta(seconds=310 + 47 * index)
            Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, started_at=started, ended_at=ended)
        else:
            Run.objects.filter(pk=run.pk).update(started_at=started)
        runs.append(run)
    return runs


def trained_on_a_node(ws) -> str:  # noqa: F811
    src = config(ws, "train_briefly.py", ["--lr", "1.0", "--epochs", "30"])
    run = Experiment(ws, name="pytorch-birds").submit(src, show_progress=False)
    assert run.wait_for_completion()["status"] == "Completed"
    return run.id


def test_screenshots_of_the_runs_table_compare_a_run_and_a_cluster(
    page,
    live_url,
    workspace,
    reader,
    ws,  # noqa: F811
    cluster,  # noqa: F811
    tmp_path,
):
    runs = sweep(workspace)
    node = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_url, TRAINHUB_SYSTEM_METRICS_SECONDS="1")
    node.start()
    try:
        trained = trained_on_a_node(ws)
        pictures(page, live_url, runs, trained, folder(tmp_path), node.name)
    finally:
        node.stop()


def pictures(page, live_url: str, runs: list[Run], trained: str, out: Path, node_name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_url, "rita")
    page.goto(
        f"{live_url}/w/birds/runs/?columns=user,duration,params.lr,params.momentum,tags.optimizer,"
        "metrics.accuracy,metrics.accuracy:max,metrics.loss&sort=metrics.accuracy&order=desc"
    )
    expect(page.locator("#metric-runs tbody tr")).to_have_count(5)
    expect(page.locator('#metric-runs thead th[data-column="metrics.accuracy"]')).to_contain_text("▼")
    page.screenshot(path=str(out / "runs-table.png"), full_page=True)

    selection = ",".join(r.run_id for r in runs)
    page.goto(f"{live_url}/w/birds/experiments/pytorch-birds/compare/?runs={selection}&together=accuracy,loss")
    expect(page.locator('.metric-chart[data-name="accuracy+loss"]')).to_have_attribute("data-runs", "8")
    expect(page.locator('#compare-params tr[data-name="lr"]')).to_have_class("differs")
    expect(page.locator("#compare-scatter circle")).to_have_count(4)
    page.screenshot(path=str(out / "compare.png"), full_page=True)

    page.goto(f"{live_url}/w/birds/runs/{trained}/")
    for name in ("loss", "accuracy", CPU, MEMORY):
        expect(page.locator(f'.metric-chart[data-name="{name}"] canvas')).to_be_visible()
    page.screenshot(path=str(out / "run.png"), full_page=True)

    page.goto(f"{live_url}/w/birds/compute/cpu-cluster/")
    row = page.locator(f'#nodes tr[data-node="{node_name}"]')
    expect(row.locator("td.memory")).to_contain_text(" MB")
    expect(row.locator("td.cpu")).to_contain_text("%")
    page.screenshot(path=str(out / "cluster.png"), full_page=True)
    pictured = ("runs-table.png", "compare.png", "run.png", "cluster.png")
    assert all((out / name).stat().st_size > 10_000 for name in pictured)
