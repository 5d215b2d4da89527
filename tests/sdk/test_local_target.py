"""compute_target="local" on the real stack: the run executes on the submitting machine (this one) in
the run's box, its lines streamed live, its metrics kept, and a cancel from the SDK stops it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCRIPT = """
import os, sys, time
from trainhub.sdk import Run

print("secret readable:", os.path.exists(sys.argv[1]), flush=True)
print("submitter's variable:", os.environ.get("SUBMITTERS_SECRET_VARIABLE"), flush=True)
print("uid:", os.getuid(), "home:", os.environ["HOME"] == os.getcwd(), flush=True)
Run.get_context().log("step", 1)
for tick in range(1200):
    print("tick", tick, flush=True)
    time.sleep(0.5)
"""


@pytest.fixture
def runner_folder():
    """Outside /tmp (which the box replaces anyway) and the home folder: only its hiding keeps it out."""
    folder = Path(tempfile.mkdtemp(prefix="trainhub-local-runner-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_local_run_is_boxed_followed_live_and_canceled(
    live_url, workspace, owner_token, runner_folder, tmp_path, monkeypatch
):
    secret = runner_folder / "secret.txt"  # beside the runner's environments and run folders
    secret.write_text("the submitter's secret")
    monkeypatch.setenv("TRAINHUB_LOCAL_RUNNER_DIR", str(runner_folder))
    monkeypatch.setenv("SUBMITTERS_SECRET_VARIABLE", "hunter2")
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    src = ScriptRunConfig(
        source_directory=str(project),
        script="train.py",
        arguments=[str(secret)],
        compute_target="local",
        environment=Environment("bare"),
    )
    run = Experiment(ws, "on-this-machine").submit(src, show_progress=False)
    shown = []
    for line in run.iter_log(follow=True):
        shown.append(line)
        if line == "tick 3":
            break
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    assert (details["status"], details["status_reason"]) == ("Canceled", "Canceled by the user.")
    assert "secret readable: False" in shown
    assert "submitter's variable: None" in shown
    uid_line = next(line for line in shown if line.startswith("uid:"))
    assert uid_line.endswith("home: True") and not uid_line.startswith("uid: 0 ")
    assert run.get_metrics()["step"] == 1
    assert "logs/std_log_process_0.txt" in run.get_file_names()
