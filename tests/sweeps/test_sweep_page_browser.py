"""The sweep page in Chromium against the live server: its charts draw, and it follows the sweep
live (a child's new metric re-ranks the table and moves the highlight, a policy's stop shows)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.sweeps.test_sweep_services import children, log, submit
from trainhub.sdk.train.hyperdrive import BanditPolicy, choice

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_sweep_page_draws_its_charts_and_follows_the_sweep(page, live_url, workspace, owner, reader, tmp_path):
    sampling = {"type": "grid", "space": {"lr": choice(0.1, 0.01, 0.001), "act": choice("relu", "tanh")}}
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=1).to_json()
    sweep = submit(workspace, owner, sampling=sampling, policy=policy, total=3, concurrent=3)
    first, second, third = children(sweep)
    log(workspace, first, [0.5, 0.6])
    log(workspace, second, [0.55, 0.58])
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/sweeps/{sweep.parent.run_id}/")
    rows = page.locator("#sweep-children tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#sweep-children tr.best")).to_have_attribute("data-run", first.run_id)
    expect(page.locator("#sweep-parallel polyline")).to_have_count(3)
    expect(page.locator(f'#sweep-parallel polyline.best[data-run="{first.run_id}"]')).to_have_count(1)
    expect(page.locator("#sweep-parallel text", has_text="tanh")).to_have_count(1)
    expect(page.locator("#sweep-curves canvas").first).to_be_visible()

    log(workspace, third, [0.7, 0.9])
    expect(page.locator("#sweep-children tr.best")).to_have_attribute("data-run", third.run_id)
    expect(rows.first).to_have_attribute("data-run", third.run_id)
    expect(rows.first.locator("td").nth(5)).to_have_text("0.9")
    expect(page.locator("#sweep-best")).to_have_text(f"#{third.number} acc = 0.9")
    stopped = page.locator(f'#sweep-children tr[data-run="{second.run_id}"]')
    expect(stopped).to_contain_text("Canceled early termination: BanditPolicy, slack 0.1 at interval 1")
    page.screenshot(path=str(tmp_path / "sweep.png"), full_page=True)
