"""The web server restarts while a run prints: the run completes, its log holds every line in
order with contiguous sequence numbers, and the browser's live log reconnects and goes on."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from runs.models import LogChunk
from tests.browser.test_workspace_flows import sign_in
from tests.faults.printer import assert_every_line_in_order, printed_lines, printer_config
from tests.helpers.processes import run_folder, wait_until
from trainhub.sdk import Experiment

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# True once the live log shows a "line N" with N above the threshold (the page keeps the last lines only).
LAST_LINE_ABOVE = """threshold => {
  const numbers = [...document.getElementById("log").textContent.matchAll(/line (\\d+)/g)].map(m => +m[1]);
  return numbers.length > 0 && Math.max(...numbers) > threshold;
}"""


def test_a_web_restart_loses_no_line(live_server_process, ws, node, page, tmp_path):
    """The session's server is the one restarted: on the same port, as an operator would."""
    server = live_server_process
    run = Experiment(ws, "web-restart").submit(printer_config(ws, tmp_path, "stop"))
    wait_until(
        lambda: LogChunk.objects.filter(run__run_id=run.id, text__contains="line 5").exists(),
        90,
        message="the run printing",
    )
    sign_in(page, server.url, "olivia")
    page.goto(f"{server.url}/w/birds/runs/{run.id}/")
    expect(page.locator("#log")).to_contain_text("line 5")

    server.stop()
    printed_while_down = printed_lines(run.id)
    server.start()
    # A line printed after the restart reaches the open page while the run still runs
    # (once the run ends the page reloads itself, which would prove nothing).
    page.wait_for_function(LAST_LINE_ABOVE, arg=printed_while_down + 30, timeout=60_000)
    (run_folder(run.id) / "stop").touch()

    assert run.wait_for_completion()["status"] == "Completed"
    assert_every_line_in_order(run.id)
