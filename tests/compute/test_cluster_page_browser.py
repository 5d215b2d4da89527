"""The cluster page in Chromium: each node's figures (load, CPU busy, memory, GPUs) read on one line
at the width the browser tests use, with the eleven columns of a node that has GPUs."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from trainhub.compute.services import node_heartbeat, node_register

# The lines a cell's text is laid out on, by their distinct tops.
LINES = """cell => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size;
}"""


@pytest.mark.browser
def test_a_nodes_cpu_memory_and_load_each_read_on_one_line(workspace, cluster, live_url, page):
    node = node_register(cluster=cluster, address="10.0.0.5", name="cpu-cluster-host-with-a-long-name-0a1b2c")
    usage = {
        "cpu_percent": 100.0,
        "memory_used_mb": 123456,
        "memory_total_mb": 262144,
        "gpus": [
            {"index": i, "utilization_percent": 100, "memory_used_mb": 40000, "memory_total_mb": 81920}
            for i in range(2)
        ],
    }
    node_heartbeat(node, usage)
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/compute/cpu-cluster/")
    row = page.locator(f'#nodes tr[data-node="{node.name}"]')
    expect(row.locator("td.cpu")).to_have_text("100.0 %")
    for cell in ("td.cpu", "td.memory", "td.load", "td.gpus .gpu"):
        for each in row.locator(cell).all():
            assert each.evaluate(LINES) == 1, f"{cell} wraps: {each.inner_text()!r}"
    # and the table still fits the page: nothing is pushed past its right edge
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
