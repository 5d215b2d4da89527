"""Runs on a real node, submitted through the SDK to a live server, as a user does."""

from __future__ import annotations

import hashlib
import os
import re
import time

import pytest

from runs.models import LogChunk, Run, Snapshot
from tests.helpers.processes import host_pid, pid_alive, run_folder, wait_until
from tests.runs.conftest import script_config
from tests.runs.test_distributed import stream_text
from trainhub.compute.models import Node
from trainhub.sdk import Experiment
from trainhub.sdk.exceptions import RunFailedError, UserErrorException

pytestmark = pytest.mark.slow


def test_a_training_script_runs_end_to_end(ws, node, tmp_path, capsys):
    src = script_config(ws, "tiny", "train.py", ["--num_epochs", 3, "--output_dir", "./outputs"])
    run = Experiment(ws, name="pytorch-birds").submit(src)
    details = run.wait_for_completion(show_output=True)
    printed = capsys.readouterr().out

    assert details["status"] == "Completed"
    assert [c["status"] for c in details["status_history"]] == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    assert "epoch 2 loss" in printed
    assert "Execution Summary" in printed
    assert {"outputs/model.pt", "logs/std_log_process_0.txt"} <= set(run.get_file_names())

    target = tmp_path / "model" / "model.pt"
    run.download_file(name="outputs/model.pt", output_file_path=str(target))
    logged = re.search(r"model sha256 ([0-9a-f]{64})", printed).group(1)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == logged
    import torch

    assert set(torch.load(target)) == {"weight", "bias"}
    downloaded = run.download_files(prefix="outputs", output_directory=str(tmp_path / "all"))
    assert downloaded == [str(tmp_path / "all" / "outputs" / "model.pt")]
    assert (tmp_path / "all" / "outputs" / "model.pt").read_bytes() == target.read_bytes()
    log_copy = tmp_path / "rank0.txt"
    run.download_file(name="logs/std_log_process_0.txt", output_file_path=str(log_copy))
    assert "epoch 0 loss" in log_copy.read_text()
    assert Node.objects.get(name=node.name).state == "idle"


def test_a_second_identical_submit_uploads_nothing(ws, node, capsys):
    src = script_config(ws, "scripts", "fail.py")
    experiment = Experiment(ws, name="dedupe")
    experiment.submit(src)
    first = capsys.readouterr().err
    experiment.submit(src)
    second = capsys.readouterr().err
    assert "Uploading snapshot" in first
    assert "Uploading snapshot" not in second
    assert Snapshot.objects.count() == 1


def test_a_rank_printing_fast_has_every_line_stored_in_order_in_few_batches(ws, node):
    """The node stores a line after a quiet spell at once, and lines that keep coming in batches
    (at most one every FLUSH_SECONDS), not one write per line."""
    lines = 20_000
    run = Experiment(ws, name="fast-printer").submit(script_config(ws, "scripts", "print_many.py", [lines]))
    assert run.wait_for_completion()["status"] == "Completed"
    chunks = LogChunk.objects.filter(run__run_id=run.id, stream="std_log_process_0").order_by("first_seq")
    assert "\n".join(chunk.text for chunk in chunks).split("\n") == [f"line {n}" for n in range(lines)]
    assert chunks.count() <= 100, f"{chunks.count()} writes for {lines} lines"


def test_a_failing_script_shows_its_exit_code_and_traceback(ws, node):
    run = Experiment(ws, name="failures").submit(script_config(ws, "scripts", "fail.py"))
    with pytest.raises(RunFailedError, match="ZeroDivisionError"):
        run.wait_for_completion()
    details = run.get_details()
    assert details["status"] == "Failed"
    assert details["exit_code"] == 1
    assert details["failed_rank"] == 0
    assert details["error_traceback"].startswith("Traceback (most recent call last)")
    assert "return a / b" in details["error_traceback"]


def test_a_rank_that_crashes_in_native_code_shows_the_signal_and_where_python_was(ws, node):
    """No Python traceback comes from a segmentation fault: the run says which signal ended the
    rank, and faulthandler (on in every rank) puts the Python stack of the crash in its error."""
    run = Experiment(ws, name="failures").submit(script_config(ws, "scripts", "crash.py"))
    with pytest.raises(RunFailedError, match="SIGSEGV"):
        run.wait_for_completion()
    details = run.get_details()
    assert details["status_reason"] == f"Rank 0 (node {node.name}) exited with code 139 (SIGSEGV)."
    assert details["error_traceback"].startswith("Fatal Python error: Segmentation fault")
    assert 'crash.py", line 10 in read_null_pointer' in details["error_traceback"]
    assert "about to crash" in stream_text(run, "std_log_process_0")


def test_cancel_stops_the_whole_process_tree(ws, node, tmp_path):
    run = Experiment(ws, name="cancels").submit(script_config(ws, "scripts", "spawn_and_wait.py", ["grandchild.pid"]))
    pid_file = lambda: run_folder(run.id) / "grandchild.pid"  # noqa: E731
    wait_until(lambda: pid_file().exists(), 60, message="the grandchild to start")
    grandchild = host_pid(run.id, int(pid_file().read_text()))
    assert pid_alive(grandchild)
    started = time.monotonic()
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 5, message="Canceled")
    assert time.monotonic() - started <= 5
    assert not pid_alive(grandchild)
    statuses = [c["status"] for c in run.get_details()["status_history"]]
    assert statuses[-1] == "Canceled"


def test_a_gpu_size_on_a_machine_without_gpus_is_refused_at_submit(ws, workspace, capsys):
    from tests.runs.builders import make_cluster
    from trainhub.sdk import Environment, ScriptRunConfig

    if any(name.startswith("nvidia") for name in os.listdir("/dev")):
        pytest.skip("this machine has a GPU")
    make_cluster(workspace, name="gpu-cluster", vm_size="STANDARD_NC6", provisioner="local")
    src = ScriptRunConfig(
        source_directory=str(__import__("tests.runs.conftest", fromlist=["PROJECTS"]).PROJECTS / "scripts"),
        script="fail.py",
        compute_target="gpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    with pytest.raises(UserErrorException, match=r"needs 1 GPU\(s\) per node"):
        Experiment(ws, name="gpu").submit(src)
    assert not Run.objects.filter(experiment__name="gpu").exists()
