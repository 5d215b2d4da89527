"""Run lists (an experiment's runs, the workspace overview) follow their active runs without a
reload, name runs by experiment and number, and show times as "5 minutes ago"."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from runs.models import RunStatus
from runs.services import run_transition
from tests.browser.test_workspace_flows import sign_in
from tests.runs.builders import make_run


def test_the_states_of_runs_are_read_only_within_the_workspace(
    client_for, reader, outsider, workspace, other_workspace
):
    started = timezone.now() - timedelta(seconds=90)
    running = make_run(workspace, status=RunStatus.RUNNING, started_at=started)
    theirs = make_run(other_workspace, experiment="theirs")
    answer = client_for(reader).get(f"/w/birds/run-states/?runs={running.run_id},{theirs.run_id},nonsense")
    states = json.loads(answer.content)
    assert list(states) == [running.run_id]
    assert states[running.run_id]["status"] == "Running" and states[running.run_id]["final"] is False
    assert states[running.run_id]["duration"] >= 90
    assert client_for(outsider).get(f"/w/birds/run-states/?runs={running.run_id}").status_code == 404


def test_the_overview_names_runs_by_experiment_and_number(client_for, reader, workspace):
    for experiment in ("alpha", "beta"):
        make_run(workspace, experiment=experiment)
    page = client_for(reader).get("/w/birds/").content.decode()
    assert ">alpha #1</a>" in page and ">beta #1</a>" in page


@pytest.mark.browser
@pytest.mark.slow
def test_the_experiment_page_follows_a_run_to_its_end_without_a_reload(page, live_url, workspace, reader):
    run = make_run(
        workspace, experiment="live", status=RunStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=5)
    )
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/experiments/live/")
    row = page.locator(f'tr[data-run="{run.run_id}"]')
    expect(row.locator(".status")).to_have_text("Running")
    submitted = row.locator("time")
    expect(submitted).to_have_text("0 minutes ago")
    assert submitted.get_attribute("title").startswith(timezone.localtime(run.created_at).strftime("%Y-%m-%d %H:%M"))
    duration = row.locator("[data-duration]")
    first = duration.text_content()
    expect(duration).not_to_have_text(first)  # the elapsed time counts up

    run_transition(run.pk, RunStatus.FINALIZING)
    run_transition(run.pk, RunStatus.COMPLETED)
    expect(row.locator(".status")).to_have_text("Completed", timeout=10_000)
    expect(row).not_to_have_attribute("data-active", "")
    ended = duration.text_content()
    page.wait_for_timeout(1500)
    assert duration.text_content() == ended  # a finished run's duration stands still
