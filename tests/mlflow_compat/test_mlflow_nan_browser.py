"""NaN and ±inf logged through MLflow's API, on the run page in Chromium: the charts leave them out
and say how many, the values table names them, before the page opened and live after."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.metrics.builders import running_run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_batch(live_url: str, run, token: str, key: str, values: list, first_step: int) -> None:  # noqa: ANN001
    # As MLflow's client sends them: NaN and infinities as protobuf's JSON strings.
    metrics = [{"key": key, "value": v, "timestamp": 0, "step": first_step + i} for i, v in enumerate(values)]
    answer = requests.post(
        f"{live_url}/mlflow/{run.workspace.name}/api/2.0/mlflow/runs/log-batch",
        json={"run_id": run.run_id, "metrics": metrics},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def test_nan_and_inf_are_named_and_left_out_of_the_chart(page, live_url, workspace, reader):
    run, token = running_run(workspace)
    log_batch(live_url, run, token, "score", [0.5, "Infinity", 0.25], 0)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    score = page.locator('.metric-chart[data-name="score"]')
    expect(score.locator("canvas")).to_be_visible()
    expect(score.locator("h4 .last")).to_have_text("last 0.25 · 3 pts · 1 NaN/inf not drawn")
    finals = page.locator('#metrics-finals tr[data-name="score"]')
    expect(finals.locator("td.range")).to_have_text("0.25 / inf")

    log_batch(live_url, run, token, "score", [0.125, "-Infinity", "NaN"], 3)
    expect(score.locator("h4 .last")).to_have_text("last NaN · 6 pts · 3 NaN/inf not drawn")
    expect(finals.locator("td.value")).to_have_text("NaN")
    expect(finals.locator("td.range")).to_have_text("-inf / inf")
    page.reload()
    expect(score.locator("h4 .last")).to_have_text("last NaN · 6 pts · 3 NaN/inf not drawn")
    expect(finals.locator("td.value")).to_have_text("NaN")
