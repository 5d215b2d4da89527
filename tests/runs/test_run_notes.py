"""A run's display name, description and tags, edited on its page, through the API and the SDK."""

from __future__ import annotations

import json

from runs.models import Run
from tests.conftest import api_client, issue_token
from tests.metrics.builders import running_run
from tests.runs.builders import make_run


def test_a_contributor_names_and_describes_a_run_on_its_page(client_for, contributor, reader, workspace):
    run = make_run(workspace, tags={"stage": "dev", "old": "x"})
    response = client_for(contributor).post(
        f"/w/birds/runs/{run.run_id}/edit/",
        {"display_name": " lr sweep ", "description": "First try\\nwith SGD", "tags": "stage=prod\nseed=1\n"},
    )
    assert response.status_code == 302
    page = client_for(reader).get(f"/w/birds/runs/{run.run_id}/").content.decode()
    assert '<span id="run-display-name">lr sweep</span>' in page
    assert "First try" in page
    assert '<span class="param">stage=prod</span>' in page and '<span class="param">seed=1</span>' in page
    assert "old=x" not in page
    assert 'id="run-edit"' not in page  # a reader sees no form
    overview = client_for(reader).get("/w/birds/").content.decode()
    assert f">{run.experiment.name} #{run.number} · lr sweep</a>" in overview


def test_a_reader_cannot_edit_and_bad_values_change_nothing(client_for, reader, contributor, outsider, workspace):
    run = make_run(workspace, display_name="kept")
    assert client_for(outsider).post(f"/w/birds/runs/{run.run_id}/edit/", {"display_name": "x"}).status_code == 404
    assert client_for(reader).post(f"/w/birds/runs/{run.run_id}/edit/", {"display_name": "x"}).status_code == 403
    client_for(contributor).post(f"/w/birds/runs/{run.run_id}/edit/", {"display_name": "y" * 201, "tags": "a=b"})
    run.refresh_from_db()
    assert run.display_name == "kept" and run.tags == {}


def test_the_api_edits_a_run_for_members_and_not_from_inside_runs(workspace, contributor, reader):
    run, run_token = running_run(workspace)
    patch = {"display_name": "baseline", "description": "notes", "tags": {"team": "vision"}}
    body = json.dumps(patch)
    answer = api_client(issue_token(workspace, contributor)).patch(
        f"/api/v1/workspaces/birds/runs/{run.run_id}", body, content_type="application/json"
    )
    assert answer.status_code == 200
    assert answer.json()["display_name"] == "baseline" and answer.json()["description"] == "notes"
    assert answer.json()["tags"] == {"team": "vision"}
    read_only = api_client(issue_token(workspace, reader)).patch(
        f"/api/v1/workspaces/birds/runs/{run.run_id}", body, content_type="application/json"
    )
    assert read_only.status_code == 403
    from_run = api_client(run_token).patch(
        f"/api/v1/workspaces/birds/runs/{run.run_id}",
        json.dumps({"display_name": "hijacked"}),
        content_type="application/json",
    )
    assert from_run.status_code in (401, 403)
    assert Run.objects.get(pk=run.pk).display_name == "baseline"


def test_the_sdk_sets_a_runs_display_name_and_description(ws, workspace):
    from trainhub.sdk import Experiment
    from trainhub.sdk.run import Run as SdkRun

    run = make_run(workspace, experiment="notes")
    sdk_run = SdkRun(Experiment(ws, "notes"), run.run_id)
    sdk_run.display_name = "from the SDK"
    sdk_run.description = "set with run.description"
    again = SdkRun(Experiment(ws, "notes"), run.run_id)
    assert again.display_name == "from the SDK" and again.description == "set with run.description"
