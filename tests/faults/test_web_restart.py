"""The web server restarts while a run prints: the run completes, its log holds every line in
order with contiguous sequence numbers, and the browser's live log reconnects and goes on."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from runs.models import LogChunk
from tests.browser.test_workspace_flows import sign_in
from tests.helpers.processes import wait_until
from trainhub.sdk import Environment, Experiment, ScriptRunConfig

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PRINTER = """
import os, sys, time
i = 0
while not os.path.exists(sys.argv[1]):
    print(f"line {i}", flush=True)
    i += 1
    time.sleep(0.02)
for _ in range(50):
    print(f"line {i}", flush=True)
    i += 1
print("the end", flush=True)
"""


# True once the live log shows a "line N" with N above the threshold (the page keeps the last lines only).
LAST_LINE_ABOVE = """threshold => {
  const numbers = [...document.getElementById("log").textContent.matchAll(/line (\\d+)/g)].map(m => +m[1]);
  return numbers.length > 0 && Math.max(...numbers) > threshold;
}"""


def printed_lines(run_id: str) -> int:
    return sum(c.line_count for c in LogChunk.objects.filter(run__run_id=run_id, stream="std_log_process_0"))


def assert_every_line_in_order(run_id: str) -> None:
    chunks = list(LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))
    expected = 1
    for chunk in chunks:
        assert chunk.first_seq == expected, f"sequence gap before {chunk.first_seq} (expected {expected})"
        expected += chunk.line_count
    printed = [line for c in chunks if c.stream == "std_log_process_0" for line in c.text.split("\n")]
    numbered = [line for line in printed if line.startswith("line ")]
    assert numbered == [f"line {i}" for i in range(len(numbered))]
    assert printed[-1] == "the end"


def test_a_web_restart_loses_no_line(live_server_process, ws, node, page, tmp_path):
    """The session's server is the one restarted: on the same port, as an operator would."""
    server = live_server_process
    project = tmp_path / "project"
    project.mkdir()
    (project / "printer.py").write_text(PRINTER)
    stop = tmp_path / "stop"
    src = ScriptRunConfig(source_directory=str(project), script="printer.py", arguments=[str(stop)],
                          compute_target="cpu-cluster",
                          environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"))
    run = Experiment(ws, "web-restart").submit(src)
    wait_until(lambda: LogChunk.objects.filter(run__run_id=run.id, text__contains="line 5").exists(), 90,
               message="the run printing")
    sign_in(page, server.url, "olivia")
    page.goto(f"{server.url}/w/birds/runs/{run.id}/")
    expect(page.locator("#log")).to_contain_text("line 5")

    server.stop()
    printed_while_down = printed_lines(run.id)
    server.start()
    # A line printed after the restart reaches the open page while the run still runs
    # (once the run ends the page reloads itself, which would prove nothing).
    page.wait_for_function(LAST_LINE_ABOVE, arg=printed_while_down + 30, timeout=60_000)
    stop.touch()

    assert run.wait_for_completion()["status"] == "Completed"
    assert_every_line_in_order(run.id)
