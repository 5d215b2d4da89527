"""SIGKILL a node mid-run, single and multi-node: the run is Failed "node lost" within 15 s,
every rank is gone, and the node slots are freed (the lost node leaves the pool, the survivor is idle)."""

from __future__ import annotations

import time

import pytest

from runs.models import RunProcess
from tests.helpers.processes import host_pid, pid_alive, run_folder, run_pids, wait_until
from tests.runs.conftest import script_config
from tests.runs.test_distributed import rank_lines
from trainhub.compute.models import Node
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.runconfig import PyTorchConfiguration

pytestmark = pytest.mark.slow


def test_a_killed_node_fails_its_run_as_node_lost(ws, node, controller, tmp_path):
    run = Experiment(ws, name="lost").submit(script_config(ws, "scripts", "spawn_and_wait.py", ["grandchild.pid"]))
    pid_file = lambda: run_folder(run.id) / "grandchild.pid"  # noqa: E731
    wait_until(lambda: pid_file().exists(), 60, message="the script to start")
    grandchild = host_pid(run.id, int(pid_file().read_text()))
    node.kill()
    took = wait_until(lambda: run.get_status() == "Failed", 15, interval=0.2, message="Failed")
    assert run.get_details()["status_reason"] == "node lost"
    assert took <= 15
    wait_until(lambda: not pid_alive(grandchild), 5, message="the orphaned process to be gone")
    assert Node.objects.get(name=node.name).state == "lost"


def test_a_node_killed_mid_run_fails_the_run_and_stops_every_rank(ws, two_nodes, controller, tmp_path):
    project = tmp_path / "hang"
    project.mkdir()
    (project / "hang.py").write_text(
        "import os, time\nprint('rank', os.environ['RANK'], 'pid', os.getpid(), flush=True)\ntime.sleep(600)\n"
    )
    src = ScriptRunConfig(
        source_directory=str(project),
        script="hang.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
    )
    run = Experiment(ws, "ddp-node-lost").submit(src)
    wait_until(
        lambda: RunProcess.objects.filter(run__run_id=run.id, state="running").count() == 4,
        90,
        message="four ranks running",
    )
    wait_until(lambda: len(rank_lines(run, "pid")) == 4, 30, message="every rank printing")
    pids = [pid for pid, _ in run_pids(run.id)]  # their pids on this machine, not in their boxes
    assert len(pids) >= 4
    victim = next(n for n in two_nodes if Node.objects.get(name=n.name).state == "busy")
    started = time.monotonic()
    victim.kill()
    wait_until(lambda: run.get_status() == "Failed", 15, interval=0.2, message="Failed")
    assert run.get_details()["status_reason"] == "node lost"
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, message="every rank gone")
    assert time.monotonic() - started <= 25
    survivor = next(n for n in two_nodes if n is not victim)
    wait_until(lambda: Node.objects.get(name=survivor.name).state == "idle", 10, message="the other node idle")
