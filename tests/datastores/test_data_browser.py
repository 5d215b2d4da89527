"""The data pages in Chromium: from the workspace menu to a datastore's files, a dataset's
versions, the run that used a version, and back from the run's inputs, as a person does."""

from __future__ import annotations

import hashlib

import pytest
from playwright.sync_api import expect

from datastores.services import run_inputs_record
from tests.browser.test_workspace_flows import sign_in
from tests.conftest import api_client, issue_token
from tests.datastores.builders import upload
from tests.runs.builders import make_run
from trainhub.sdk._data_reference import marker

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_i_follow_a_dataset_to_the_run_that_used_it_and_back(page, live_url, workspace, owner):
    client = api_client(issue_token(workspace, owner))
    upload(client, "birds", {"fowl/train/a.csv": b"x,y\n1,2\n", "fowl/labels.txt": b"chicken\n"})
    client.post(
        "/api/v1/workspaces/birds/datasets/fowl/versions",
        {"sources": [["workspaceblobstore", "fowl/**"]]},
        content_type="application/json",
    )
    run = make_run(workspace, arguments=["--data_dir", marker({"kind": "dataset", "dataset": "fowl", "mode": "mount"})])
    run_inputs_record(run=run)

    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/")
    page.get_by_role("link", name="Data", exact=True).click()
    page.locator("#datastores").get_by_role("link", name="workspaceblobstore").click()
    expect(page.locator("#files")).to_contain_text("fowl/train/a.csv")
    expect(page.locator("#files")).to_contain_text(hashlib.sha256(b"chicken\n").hexdigest()[:12])
    with page.expect_download() as download:
        page.locator("#files").get_by_role("link", name="fowl/labels.txt").click()
    assert download.value.suggested_filename == "labels.txt"
    assert open(download.value.path(), "rb").read() == b"chicken\n"

    page.get_by_role("link", name="Data", exact=True).first.click()
    page.locator("#datasets").get_by_role("link", name="fowl").click()
    page.locator("#versions").get_by_role("link", name="1", exact=True).click()
    expect(page.locator("#files")).to_contain_text("train/a.csv")
    page.locator("#used-by").get_by_role("link", name=run.run_id).click()

    expect(page.locator("#run-inputs")).to_contain_text("${TRAINHUB_INPUT_fowl}")
    page.locator("#run-inputs").get_by_role("link", name="dataset fowl:1").click()
    expect(page.locator("h1")).to_contain_text("version 1")
