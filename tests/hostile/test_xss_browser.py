"""Script injection through everything a user names or a run prints, checked in Chromium.

Every free-text field of every kind of object (workspace description, run display name, status
reason and traceback, tags, metric names, table rows, model description and tags, environment
description and variables, token names, log lines with ANSI escapes, stored and streamed live)
holds payloads that would run if any page put them in the DOM as HTML. Each page is opened, its
scripts left to render, and no payload may have run. Fields restricted to plain names refuse them.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from metrics.services import metrics_ingest, parse_batch
from runs.models import RunStatus
from runs.services import log_append
from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client
from tests.registry.builders import access_of, register, run_with_outputs
from trainhub.environments.services import environment_register
from trainhub.workspaces.models import ApiToken, Workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Each payload records where it ran in window.__xss; a dialog would be caught as well.
IMG = '<img src=x onerror="window.__xss=(window.__xss||[]).concat(location.pathname)">'
SCRIPT = "</script><script>window.__xss=['script '+location.pathname]</script>"
SVG = "\"'><svg onload=window.__xss=['svg']>"
ANSI = "\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x1b[2J"
PAYLOADS = [IMG, SCRIPT, SVG, ANSI]
PAYLOAD = " ".join(PAYLOADS)


@pytest.fixture
def hostile_world(live_url, workspace, owner, reader):
    """A workspace whose every free-text field carries the payloads."""
    Workspace.objects.filter(pk=workspace.pk).update(description=PAYLOAD)
    access = access_of(workspace, owner)
    run = run_with_outputs(
        workspace,
        {"outputs/model.pt": b"w"},
        display_name=PAYLOAD,
        tags={PAYLOAD: PAYLOAD},
        status_reason=PAYLOAD,
        error_traceback=PAYLOAD,
        created_by=owner,
    )
    log_append(run.pk, "std_log_process_0", PAYLOADS)
    batch = {
        "rank": 0,
        "metrics": [{"name": payload, "values": [1.0, 0.5]} for payload in PAYLOADS],
        "rows": [{"name": f"table {IMG}", "cells": {SCRIPT: SVG}}],
        "tags": {SVG: IMG},
    }
    metrics_ingest(access=access, run=run, batch=parse_batch(batch))
    register(
        workspace,
        owner,
        run,
        name="birds",
        tags={IMG[:100]: PAYLOAD, SVG: SCRIPT},
        description=PAYLOAD,
        properties={SCRIPT: IMG},
    )
    environment_register(
        access=access,
        user=owner,
        name="hostile-env",
        description=PAYLOAD,
        spec={"python": "3.11", "pip": ["six"], "environment_variables": {"X": PAYLOAD}},
    )
    ApiToken.objects.create(workspace=workspace, user=reader, name=IMG[:100], prefix="th_x", token_hash="y" * 64)
    return run


def pages(run) -> list[str]:
    base = "/w/birds"
    return [
        "/workspaces/",
        f"{base}/",
        f"{base}/members/",
        f"{base}/tokens/",
        f"{base}/experiments/",
        f"{base}/experiments/{run.experiment.name}/",
        f"{base}/experiments/{run.experiment.name}/metrics/",
        f"{base}/runs/?" + urlencode({"columns": f"parameters,tags.{SVG}", "q": SCRIPT}),
        f"{base}/runs/?" + urlencode({"columns": f"user,tags.{IMG[:100]}", "sort": f"metrics.{SVG}"}),
        f"{base}/experiments/{run.experiment.name}/compare/?runs={run.run_id}",
        f"{base}/runs/{run.run_id}/",
        f"{base}/models/",
        f"{base}/models/birds/",
        f"{base}/models/birds/1/",
        f"{base}/environments/",
        f"{base}/environments/hostile-env/",
        f"{base}/environments/hostile-env/versions/1/",
    ]


def assert_inert(page, url: str) -> None:
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__xss") is None, f"a payload ran on {url}"


def test_payloads_stay_text_on_every_page(page, live_url, hostile_world, reader):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, live_url, "rita")
    for url in pages(hostile_world):
        page.goto(live_url + url)
        assert_inert(page, url)
    # The run page shows the payloads as text: they reached the page and were not dropped.
    page.goto(f"{live_url}/w/birds/runs/{hostile_world.run_id}/")
    expect(page.locator("body")).to_contain_text("onerror=")
    assert "pwned" not in page.title()
    assert dialogs == []


def test_payloads_streamed_live_stay_text(page, live_url, hostile_world, owner_token):
    """Lines and metric names arriving over the sockets after the page opened."""
    from runs.models import Run

    Run.objects.filter(pk=hostile_world.pk).update(status=RunStatus.RUNNING)
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/runs/{hostile_world.run_id}/")
    page.wait_for_load_state("networkidle")
    log_append(hostile_world.pk, "std_log_process_0", [f"live {p}" for p in PAYLOADS])
    live_names = {"rank": 0, "metrics": [{"name": f"live {p}", "values": [2.0]} for p in PAYLOADS]}
    answer = api_client(owner_token).post(
        f"/api/v1/workspaces/birds/runs/{hostile_world.run_id}/metrics",
        data=json.dumps(live_names),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    expect(page.locator("body")).to_contain_text("live <img src=x")
    assert_inert(page, "the live run page")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/workspaces/birds/environments", {"name": IMG, "spec": {"python": "3.11"}}),
        ("/api/v1/workspaces/birds/computes", {"name": SVG, "vm_size": "LOCAL_CPU"}),
        ("/api/v1/workspaces/birds/models/%3Cimg/versions", {"run_id": "x", "model_path": "outputs/model.pt"}),
    ],
)
def test_names_refuse_markup(workspace, owner_token, url, body):
    """Workspace-scoped names are plain names: markup in one is refused with a clear error."""
    answer = api_client(owner_token).post(url, data=json.dumps(body), content_type="application/json")
    assert answer.status_code in (400, 404)
    assert answer.json()["detail"]
