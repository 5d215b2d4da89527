"""The workspace runs table and the compare view in Chromium: the table's choices survive a reload
through its URL (a sort by a parameter too), its runs change live and a new run comes in at the
top of the newest-first table; compare draws two metrics on one chart and a scatter."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from runs.models import Run, RunStatus
from runs.services import run_transition
from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body
from tests.metrics.test_workspace_runs_table import runs_of_two_experiments

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_workspace_table_keeps_its_choices_in_the_url_and_follows_its_runs(page, live_url, workspace, reader):
    runs, tokens = runs_of_two_experiments(workspace)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/")
    page.locator("nav.wsnav").get_by_role("link", name="Runs").click()
    expect(page.locator("#metric-runs tbody tr")).to_have_count(5)

    page.locator("#column-picker summary").click()
    picker = page.locator("#column-picker")
    picker.locator('input[value="parameters"]').uncheck()
    picker.locator('input[value="params.lr"]').check()
    picker.locator('input[value="metrics.accuracy:max"]').check()
    page.fill("#run-filter", "experiment = tuned")
    page.select_option("#sort", "metrics.accuracy")
    page.select_option("#order", "desc")
    page.get_by_role("button", name="Show").click()

    def shows_the_choice() -> None:
        rows = page.locator("#metric-runs tbody tr")
        expect(rows).to_have_count(3)
        for position, key in enumerate("bec"):  # tuned, by accuracy, the run without it last
            expect(rows.nth(position)).to_have_attribute("data-run", runs[key].run_id)
        heads = page.locator("#metric-runs thead th[data-column]")
        expect(heads).to_have_text(["User", "Started", "Duration", "lr", "accuracy ▼", "accuracy (max)"])
        expect(page.locator("#run-filter")).to_have_value("experiment = tuned")
        expect(page.locator(f'tr[data-run="{runs["e"].run_id}"] td').nth(6)).to_have_text("0.1")

    shows_the_choice()
    page.reload()
    shows_the_choice()

    row = page.locator(f'tr[data-run="{runs["e"].run_id}"]')
    expect(row.locator(".status")).to_have_text("Running")
    Run.objects.filter(pk=runs["e"].pk).update(started_at=timezone.now() - timedelta(seconds=95))
    expect(row.locator("td[data-duration]")).to_have_text(re.compile(r"^1 min \d+ s$"))  # counting up
    post_batch(api_client(tokens["e"]), runs["e"], series_body("accuracy", [0.97]))
    expect(row.locator('td[data-metric="metrics.accuracy:max"] .value')).to_have_text("0.97")
    expect(row.locator('td[data-metric="metrics.accuracy"] .range')).to_have_text("0.2 – 0.97")
    run_transition(runs["e"].pk, RunStatus.FINALIZING)
    run_transition(runs["e"].pk, RunStatus.COMPLETED)
    expect(row.locator(".status")).to_have_text("Completed")
    expect(row.locator("td[data-duration]")).not_to_have_attribute("data-running-since", re.compile(".*"))
    ended = row.locator("td[data-duration]").text_content()
    page.reload()  # what the page prints of the finished run is what its live cell shows
    expect(row.locator("td[data-duration]")).to_have_text(ended)

    page.goto(f"{live_url}/w/birds/runs/")  # newest first: a run submitted now comes in at the top
    expect(page.locator("#metric-runs tbody tr")).to_have_count(5)
    submitted, _ = running_run(workspace, experiment="tuned", arguments=["--lr", "0.5"])
    expect(page.locator("#metric-runs tbody tr").first).to_have_attribute("data-run", submitted.run_id)
    expect(page.locator("#metric-runs tbody tr")).to_have_count(6)

    page.select_option("#sort", "params.lr")
    page.select_option("#order", "desc")
    page.get_by_role("button", name="Show").click()

    def sorted_by_lr() -> None:  # as numbers: 0.5, then 0.1 (e, a), 0.01 (d, b), 0.001
        rows = page.locator("#metric-runs tbody tr")
        for position, run in enumerate([submitted, *(runs[key] for key in "eadbc")]):
            expect(rows.nth(position)).to_have_attribute("data-run", run.run_id)
        expect(page.locator("#sort")).to_have_value("params.lr")

    sorted_by_lr()
    page.reload()
    sorted_by_lr()


def test_compare_draws_two_metrics_on_one_chart_and_a_scatter(page, live_url, workspace, reader):
    runs = []
    for lr, final in (("0.1", 0.6), ("0.01", 0.8), ("0.001", 0.7)):
        run, token = running_run(workspace, experiment="sweep", arguments=["--lr", lr])
        post_batch(api_client(token), run, series_body("accuracy", [0.1, 0.3, final]))
        post_batch(api_client(token), run, series_body("loss", [2.0, 1.0, 1 - final]))
        runs.append(run)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/compare/?runs={','.join(r.run_id for r in runs)}")
    page.locator('#compare-together input[value="accuracy"]').check()
    page.locator('#compare-together input[value="loss"]').check()
    page.select_option("#compare-axis", "wall")

    def shows_both_metrics_on_one_chart() -> None:
        chart = page.locator('.metric-chart[data-name="accuracy+loss"]')
        expect(chart).to_have_attribute("data-runs", "6")
        expect(chart.locator("h4")).to_contain_text("accuracy + loss")
        expect(chart.locator(".u-legend")).to_contain_text(f"loss · sweep #{runs[0].number}")
        expect(chart.locator(".u-legend")).to_contain_text("time")
        expect(page.locator(".metric-chart")).to_have_count(1)

    shows_both_metrics_on_one_chart()
    page.reload()
    shows_both_metrics_on_one_chart()

    scatter = page.locator("#compare-scatter")
    expect(page.locator("#scatter-x")).to_have_value("params.lr")
    expect(page.locator("#scatter-y")).to_have_value("metrics.accuracy")
    expect(scatter.locator("circle")).to_have_count(3)
    expect(scatter.locator("svg")).to_have_attribute("aria-label", "accuracy against lr")
    page.select_option("#scatter-y", "metrics.loss:min")
    expect(scatter.locator("svg")).to_have_attribute("aria-label", "loss (min) against lr")
    expect(scatter.locator("circle")).to_have_count(3)
