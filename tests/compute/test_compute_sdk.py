"""The guide's compute snippet against a live server, and the local provisioner with a real controller."""

from __future__ import annotations

import os
import signal

import pytest

from runs.models import RunNode
from tests.helpers.processes import pid_alive, wait_until
from trainhub.compute.models import Node

pytestmark = pytest.mark.slow


def test_the_guides_find_or_create_snippet(live_url, workspace, owner_token, capsys):
    from trainhub.sdk import Workspace
    from trainhub.sdk.compute import AmlCompute, ComputeTarget
    from trainhub.sdk.compute_target import ComputeTargetException

    ws = Workspace.get("birds", url=live_url, token=owner_token)
    cluster_name = "gpu-cluster"
    with pytest.raises(ComputeTargetException, match="no compute target named 'gpu-cluster'"):
        ComputeTarget(workspace=ws, name=cluster_name)
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)
    compute_target.wait_for_completion(show_output=True, min_node_count=None, timeout_in_minutes=20)
    assert 'operation "Succeeded"' in capsys.readouterr().out
    found = ComputeTarget(workspace=ws, name=cluster_name)
    assert (found.vm_size, found.serialize()["max_nodes"], found.serialize()["gpus"]) == ("STANDARD_NC6", 4, 1)
    assert [t.name for t in ComputeTarget.list(ws)] == ["gpu-cluster"]


def test_the_local_provisioner_scales_up_for_a_run_and_down_when_idle(ws, workspace, controller):
    from tests.runs.builders import make_cluster
    from tests.runs.conftest import PROJECTS
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig

    make_cluster(
        workspace, name="elastic", min_nodes=0, max_nodes=1, provisioner="local", idle_seconds_before_scaledown=2
    )
    assert not Node.objects.exists()
    src = ScriptRunConfig(
        source_directory=str(PROJECTS / "scripts"),
        script="print_slowly.py",
        arguments=["/nonexistent-ok"],
        compute_target="elastic",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        max_run_duration_seconds=2,
    )
    run = Experiment(ws, "elastic").submit(src)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "time limit of 2 s" in details["status_reason"]
    node = Node.objects.get()
    assert node.managed
    wait_until(lambda: Node.objects.get(pk=node.pk).state == "stopped", 30, message="scale-down")
    wait_until(lambda: not pid_alive(node.pid), 10, message="the node process to exit")


def standby_pids(controller) -> set[int]:
    """The controller's children waiting as standby nodes (`trainhub_node --standby`), seen from
    /proc: a standby that became a node has a Node row with its pid."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue
        if parent == controller.process.pid and b"--standby" in args:
            found.add(int(entry))
    return found - set(Node.objects.values_list("pid", flat=True))


def test_a_standby_node_takes_the_second_placement_of_a_two_node_job(ws, workspace, controller, tmp_path):
    from tests.runs.builders import make_cluster
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig
    from trainhub.sdk.compute import ComputeTarget
    from trainhub.sdk.runconfig import PyTorchConfiguration

    make_cluster(workspace, name="warm", min_nodes=1, max_nodes=3, provisioner="local")
    wait_until(lambda: Node.objects.filter(state="idle").count() == 1, 60, message="the cluster's warm node")
    warm = Node.objects.get()
    wait_until(lambda: standby_pids(controller), 30, message="a standby node process")
    (standby,) = standby_pids(controller)
    # Started but no node: the cluster shows its one node only.
    nodes = ComputeTarget(workspace=ws, name="warm").serialize()["nodes"]
    assert [(n["name"], n["state"]) for n in nodes] == [(warm.name, "idle")]

    (tmp_path / "hello.py").write_text("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n")
    src = ScriptRunConfig(
        source_directory=str(tmp_path),
        script="hello.py",
        compute_target="warm",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2),
    )
    run = Experiment(ws, "warm-standby").submit(src)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed"

    # The second node of the job is the standby, activated: a managed node with its pid.
    def states() -> list[str]:
        return sorted(n["state"] for n in ComputeTarget(workspace=ws, name="warm").serialize()["nodes"])

    # A node frees itself just after its run's end is stored.
    wait_until(lambda: states() == ["idle", "idle"], 30, message="both nodes idle again")
    nodes = ComputeTarget(workspace=ws, name="warm").serialize()["nodes"]
    (added,) = [n["name"] for n in nodes if n["name"] != warm.name]
    assert (Node.objects.get(name=added).pid, Node.objects.get(name=added).managed) == (standby, True)
    placed = set(RunNode.objects.filter(run__run_id=run.id).values_list("node__name", flat=True))
    assert placed == {warm.name, added}

    # Two nodes of three: the controller keeps another standby, and replaces one that dies.
    wait_until(lambda: standby_pids(controller), 30, message="the next standby")
    (second,) = standby_pids(controller)
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: standby_pids(controller) - {second}, 30, message="a standby replacing the dead one")
    (third,) = standby_pids(controller)

    # The standby goes with the controller, as the nodes do.
    controller.stop()
    wait_until(lambda: not pid_alive(third), 10, message="the standby to exit")
    assert Node.objects.count() == 2  # the standbys that never became nodes left no row
