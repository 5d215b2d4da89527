"""Metric charts in Chromium against the live server: live updates, compare view, CSV download."""

from __future__ import annotations

import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body
from tests.metrics.test_sdk_metrics import run_env, script

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def log(run, token, name, values, rank: int = 0):
    assert post_batch(api_client(token), run, series_body(name, values, rank=rank)).status_code == 200


def test_the_run_page_charts_points_logged_after_it_opened(page, live_url, workspace, reader, tmp_path):
    run, token = running_run(workspace)
    log(run, token, "loss", [1.0 / (i + 1) for i in range(10)])
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    loss = page.locator('.metric-chart[data-name="loss"]')
    expect(loss.locator("canvas")).to_be_visible()
    expect(loss.locator("h4 .last")).to_contain_text("10 pts")

    path = script(
        tmp_path,
        """
        from trainhub.sdk import Run
        run = Run.get_context()
        run.log_list("loss", [0.05] * 20)
        for step in range(5):
            run.log("accuracy", 0.5 + step / 10)
        run.tag("optimizer", "adam")
        """,
    )
    done = subprocess.run(
        [sys.executable, path],
        env=run_env(run, token, live_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    expect(loss.locator("h4 .last")).to_contain_text("last 0.05 · 30 pts")
    accuracy = page.locator('.metric-chart[data-name="accuracy"]')
    expect(accuracy.locator("canvas")).to_be_visible()
    expect(page.locator('#metrics-finals tr[data-name="accuracy"] td.value')).to_have_text("0.9")
    expect(page.locator("#metrics-tags")).to_contain_text("adam")
    page.screenshot(path=str(tmp_path / "run-metrics.png"), full_page=True)


def test_other_ranks_are_shown_on_demand(page, live_url, workspace, reader):
    run, token = running_run(workspace)
    log(run, token, "loss", [0.5, 0.4], rank=0)
    log(run, token, "loss", [0.9, 0.8, 0.7], rank=1)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    last = page.locator('.metric-chart[data-name="loss"] h4 .last')
    expect(last).to_contain_text("last 0.4 · 2 pts")
    page.select_option("#metrics-rank", "1")
    expect(last).to_contain_text("last 0.7 · 3 pts")
    page.select_option("#metrics-axis", "time")
    expect(page.locator('.metric-chart[data-name="loss"] canvas')).to_be_visible()


def test_three_runs_are_compared_on_one_chart_per_metric(page, live_url, workspace, reader, tmp_path):
    runs = []
    for final in (0.6, 0.8, 0.7):
        run, token = running_run(workspace, experiment="sweep")
        log(run, token, "accuracy", [0.1, 0.3, final])
        log(run, token, "loss", [1.0, 1 - final])
        runs.append(run)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/experiments/sweep/")
    page.locator("#metrics-view").click()
    page.select_option("#sort", "accuracy")
    page.select_option("#order", "desc")
    page.get_by_role("button", name="Show").click()
    rows = page.locator("#metric-runs tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_attribute("data-run", runs[1].run_id)
    for run in runs:
        page.locator(f'tr[data-run="{run.run_id}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Compare selected runs").click()

    selection = ",".join(r.run_id for r in (runs[1], runs[2], runs[0]))  # in the table's order
    expect(page).to_have_url(f"{live_url}/w/birds/experiments/sweep/compare/?runs={selection}")
    expect(page.locator("#compare-charts")).to_have_attribute("data-ready", "1")
    for metric in ("accuracy", "loss"):
        chart = page.locator(f'.metric-chart[data-name="{metric}"]')
        expect(chart).to_have_attribute("data-runs", "3")
        for run in runs:
            expect(chart.locator(".u-legend")).to_contain_text(f"#{run.number}")
    page.select_option("#compare-axis", "time")
    expect(page.locator('.metric-chart[data-name="loss"] .u-legend')).to_contain_text("seconds")
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    shared = page.context.new_page()
    shared.goto(page.url)
    expect(shared.locator('.metric-chart[data-name="accuracy"]')).to_have_attribute("data-runs", "3")


def test_the_csv_downloads_from_the_run_page(page, live_url, workspace, reader):
    run, token = running_run(workspace)
    log(run, token, "loss", [0.5, 0.25])
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    with page.expect_download() as download_info:
        page.locator('#metrics-finals tr[data-name="loss"] a', has_text="CSV").click()
    download = download_info.value
    assert download.suggested_filename == f"{run.run_id}-loss.csv"
    lines = open(download.path()).read().splitlines()
    assert lines[0] == "name,rank,step,value,time_unix,time_utc"
    assert [line.split(",")[:4] for line in lines[1:]] == [
        ["loss", "0", "0", "0.5"],
        ["loss", "0", "1", "0.25"],
    ]


def test_the_live_min_and_max_keep_the_points_from_before_the_page_opened(page, live_url, workspace, reader):
    run, token = running_run(workspace)
    log(run, token, "accuracy", [0.1, 0.5])
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    summary = page.locator('#metrics-finals tr[data-name="accuracy"] td.range')
    expect(summary).to_have_text("0.1 / 0.5")

    log(run, token, "accuracy", [0.287, 0.3])
    expect(page.locator('#metrics-finals tr[data-name="accuracy"] td.value')).to_have_text("0.3")
    live = summary.text_content()
    page.reload()
    expect(summary).to_have_text("0.1 / 0.5")
    assert live == "0.1 / 0.5"


def test_runs_of_two_experiments_compare_on_one_chart_with_a_log_scale(page, live_url, workspace, reader):
    from tests.metrics.test_compare_across import two_experiments

    first, second = two_experiments(workspace)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/experiments/baseline/compare/?runs={first.run_id}")
    page.select_option("#compare-add select", second.run_id)
    page.get_by_role("button", name="Add").click()
    expect(page).to_have_url(f"{live_url}/w/birds/compare/?runs={first.run_id}&runs={second.run_id}")
    chart = page.locator('.metric-chart[data-name="loss"]')
    expect(chart).to_have_attribute("data-runs", "2")
    legend = chart.locator(".u-legend")
    expect(legend).to_contain_text("baseline #1 (lr=0.1, note=—)")
    expect(legend).to_contain_text("tuned #1 (lr=0.01, note=warm)")
    expect(page.locator('#compare-params tr[data-name="lr"]')).to_have_class("differs")
    page.select_option("#compare-scale", "log")
    expect(page.locator('.metric-chart[data-name="loss"]')).to_have_attribute("data-scale", "log")
    page.locator("#compare-smoothing").fill("0.6")
    page.select_option("#compare-size", "large")
    expect(page.locator("#compare-charts")).to_have_class("metric-charts large")
