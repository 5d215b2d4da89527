"""The guide's compute snippet against a live server, and the local provisioner with a real controller."""

from __future__ import annotations

import pytest

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
