"""Screenshots of the runs table, the compare view and a run page, for the README.

They are written to docs/screenshots/ by `make screenshots` (TRAINHUB_SCREENSHOTS set); in
`make test` they go to the test's own folder, so that the pages are still drawn and checked."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from runs.models import Run, RunStatus
from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body

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
        if index < 3:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
        runs.append(run)
    return runs


def test_screenshots_of_the_runs_table_compare_and_a_run(page, live_url, workspace, reader, tmp_path):
    runs = sweep(workspace)
    out = folder(tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_url, "rita")
    page.goto(
        f"{live_url}/w/birds/experiments/pytorch-birds/metrics/?columns=accuracy&columns=loss&sort=accuracy&order=desc"
    )
    expect(page.locator("#metric-runs tbody tr")).to_have_count(4)
    page.screenshot(path=str(out / "runs-table.png"), full_page=True)

    page.goto(f"{live_url}/w/birds/experiments/pytorch-birds/compare/?runs={','.join(r.run_id for r in runs)}")
    expect(page.locator("#compare-charts")).to_have_attribute("data-ready", "1")
    expect(page.locator('#compare-params tr[data-name="lr"]')).to_have_class("differs")
    page.screenshot(path=str(out / "compare.png"), full_page=True)

    page.goto(f"{live_url}/w/birds/runs/{runs[-1].run_id}/")
    expect(page.locator('.metric-chart[data-name="accuracy"] canvas')).to_be_visible()
    page.screenshot(path=str(out / "run.png"), full_page=True)
    assert all((out / name).stat().st_size > 10_000 for name in ("runs-table.png", "compare.png", "run.png"))
