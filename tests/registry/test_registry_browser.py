"""The registry in Chromium: find a model by tag, open a version, download it as a file and a
folder version as a zip, as a person does."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.registry.builders import register, run_with_outputs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WEIGHTS = bytes(range(256)) * 4000


def test_i_find_a_model_and_download_it(page, live_url, workspace, owner, tmp_path):
    run = run_with_outputs(workspace, {"outputs/model.pt": WEIGHTS, "outputs/tok/vocab.txt": b"a b"})
    register(workspace, owner, run, tags={"stage": "prod"})
    register(workspace, owner, run, name="tokenizer", path="outputs/tok")

    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/")
    page.get_by_role("link", name="Models").click()
    page.get_by_label("Search by name or tag").fill("stage=prod")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#models")).not_to_contain_text("tokenizer")
    page.get_by_role("link", name="pytorch-birds").click()
    page.locator("#versions").get_by_role("link", name="1", exact=True).click()
    expect(page.locator("#files")).to_contain_text(hashlib.sha256(WEIGHTS).hexdigest())
    expect(page.locator("#lineage-run")).to_have_text(f"{run.experiment.name} #{run.number}")

    with page.expect_download() as caught:
        page.get_by_role("button", name="Download model.pt").click()
    download = caught.value
    assert download.suggested_filename == "model.pt"
    download.save_as(tmp_path / "model.pt")
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS

    page.goto(f"{live_url}/w/birds/models/tokenizer/1/")
    with page.expect_download() as caught:
        page.get_by_role("button", name="Download tok/ as zip").click()
    caught.value.save_as(tmp_path / "tok.zip")
    with zipfile.ZipFile(tmp_path / "tok.zip") as archive:
        assert archive.read("tok/vocab.txt") == b"a b"

    page.locator("#lineage-run").click()
    expect(page.locator("#registered-models")).to_contain_text("pytorch-birds:1")
