"""The run page in Chromium: the live log shows a line printed after the page was opened, and
the status follows the run to its end."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.helpers.processes import run_folder, wait_until
from tests.runs.conftest import script_config
from trainhub.sdk import Experiment

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_live_log_shows_a_line_printed_after_the_page_opened(page, live_url, ws, node):
    # The file the script waits for is in its run folder: a run's /tmp is its own.
    run = Experiment(ws, "live").submit(script_config(ws, "scripts", "print_slowly.py", ["go"]))
    wait_until(lambda: run.get_status() == "Running", 60, message="Running")
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/runs/{run.id}/")
    log = page.locator("#log")
    expect(log).to_contain_text("first line")
    expect(log).not_to_contain_text("LATER-LINE")
    (run_folder(run.id) / "go").write_text("now")
    expect(log).to_contain_text("LATER-LINE after the page opened", timeout=20_000)
    expect(page.locator("#run-status")).to_have_text("Completed", timeout=30_000)
    # The page reloads once the run ended, to show its files.
    expect(page.locator("#files")).to_contain_text("logs/std_log_process_0.txt", timeout=20_000)


def test_a_hostile_log_line_stays_text_in_the_browser(page, live_url, ws, node, tmp_path):
    project = tmp_path / "xss"
    project.mkdir()
    (project / "xss.py").write_text(
        "print('<img src=x onerror=\"document.title=1\">')\nprint('</script><script>document.title=2</script>')\n"
        "print('\\x1b[31mred\\x1b[0m')\n"
    )
    from trainhub.sdk import Environment, ScriptRunConfig

    src = ScriptRunConfig(
        source_directory=str(project),
        script="xss.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    sign_in(page, live_url, "olivia")
    run = Experiment(ws, "xss").submit(src)
    page.goto(f"{live_url}/w/birds/runs/{run.id}/")
    expect(page.locator("#log")).to_contain_text("<img src=x", timeout=60_000)
    run.wait_for_completion()
    page.reload()
    expect(page.locator("#log")).to_contain_text("</script><script>document.title=2</script>")
    assert page.title().startswith("Run ")
    assert page.locator("#log img").count() == 0


def test_the_log_shows_one_rank_or_all_of_them(page, live_url, ws, node):
    from trainhub.sdk.runconfig import PyTorchConfiguration

    src = script_config(ws, "ddp", "ddp_check.py", distributed_job_config=PyTorchConfiguration(process_count=2))
    run = Experiment(ws, "ranks").submit(src)
    run.wait_for_completion()
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/runs/{run.id}/")
    log = page.locator("#log")
    expect(log).to_contain_text("[std_log_process_0] rank 0/2")
    expect(log).to_contain_text("[std_log_process_1] rank 1/2")
    page.select_option("#log-filter", "std_log_process_1")
    # What the user sees (inner text): rank 0's lines are hidden, rank 1's stay.
    expect(log).to_contain_text("[std_log_process_1] rank 1/2", use_inner_text=True)
    expect(log).not_to_contain_text("[std_log_process_0]", use_inner_text=True)
    page.select_option("#log-filter", "")
    expect(log).to_contain_text("[std_log_process_0] rank 0/2", use_inner_text=True)
