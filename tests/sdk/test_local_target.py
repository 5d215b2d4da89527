"""compute_target="local" on the real stack: the run executes on the submitting machine (this one) in
the run's box, its lines streamed live, its metrics (and its rank's system metrics) kept, and a cancel
from the SDK stops it."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace
from trainhub.sdk.exceptions import UserErrorException

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
    monkeypatch.setenv("TRAINHUB_SYSTEM_METRICS_SECONDS", "1")
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
        if line == "tick 6":  # 3 s: the runner sampled the rank twice
            break
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    assert (details["status"], details["status_reason"]) == ("Canceled", "Canceled by the user.")
    assert "secret readable: False" in shown
    assert "submitter's variable: None" in shown
    uid_line = next(line for line in shown if line.startswith("uid:"))
    assert uid_line.endswith("home: True") and not uid_line.startswith("uid: 0 ")
    metrics = run.get_metrics()
    assert metrics["step"] == 1
    assert {"system/memory_mb", "system/cpu_percent"} <= set(metrics)  # the rank's, sampled by the runner
    assert "logs/std_log_process_0.txt" in run.get_file_names()


USER_MANAGED_SCRIPT = """
import os, sys
print("python:", sys.executable, flush=True)
print("secret readable:", os.path.exists(sys.argv[1]), flush=True)
print("home readable:", os.path.exists(sys.argv[2]), flush=True)
"""


def test_a_user_managed_environment_runs_with_the_submitters_python_in_the_box_and_nothing_more(
    live_url, workspace, owner_token, runner_folder, tmp_path, monkeypatch
):
    runner_folder.chmod(0o755)  # the box's user goes through it to the run's folder
    runner = runner_folder / "runner"
    runner.mkdir()
    secret = runner / "secret.txt"
    secret.write_text("the submitter's secret")
    monkeypatch.setenv("TRAINHUB_LOCAL_RUNNER_DIR", str(runner))
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(USER_MANAGED_SCRIPT)
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    environment = Environment("mine")
    environment.python.user_managed_dependencies = True
    home_file = next(path for path in Path.home().iterdir() if path.is_file() or path.is_dir())
    src = ScriptRunConfig(
        source_directory=str(project),
        script="train.py",
        arguments=[str(secret), str(home_file)],
        compute_target="local",
        environment=environment,
    )
    experiment = Experiment(ws, "on-this-machine")
    run = experiment.submit(src, show_progress=False)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed", list(run.iter_log())
    shown = list(run.iter_log())
    assert f"python: {sys.executable}" in shown
    assert "secret readable: False" in shown and "home readable: False" in shown

    # An interpreter whose folder holds what the box hides (here the runner's folder) would show it.
    (runner_folder / "bin").mkdir()
    (runner_folder / "bin" / "python").symlink_to(sys.executable)
    environment.python.interpreter_path = str(runner_folder / "bin" / "python")
    refused = experiment.submit(src, show_progress=False).wait_for_completion(raise_on_error=False)
    assert refused["status"] == "Failed"
    assert f"belongs to {runner_folder}, which holds {runner}" in refused["status_reason"]

    environment.python.interpreter_path = str(tmp_path / "no-python")
    with pytest.raises(UserErrorException, match="is no Python interpreter on this machine"):
        experiment.submit(src, show_progress=False)


def test_a_bad_interpreter_path_is_refused_before_anything_is_recorded(live_url, workspace, owner_token, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('never runs')\n")
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    environment = Environment("never-registered")
    environment.python.user_managed_dependencies = True
    environment.python.interpreter_path = str(tmp_path / "no-python")
    src = ScriptRunConfig(
        source_directory=str(project), script="train.py", compute_target="local", environment=environment
    )
    with pytest.raises(UserErrorException, match="is no Python interpreter on this machine"):
        Experiment(ws, "on-this-machine").submit(src, show_progress=False)
    assert "never-registered" not in Environment.list(ws)
    assert "on-this-machine" not in [experiment.name for experiment in Experiment.list(ws)]
