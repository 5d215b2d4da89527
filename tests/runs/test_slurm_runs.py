"""Runs on a Slurm cluster, on a real Slurm (tests/helpers/slurm.py: slurmctld and slurmd n1, n2 on
this host): the cluster is attached with the SDK, each run is one Slurm job whose task on each
allocated host runs TrainHub's node-side execution, and Slurm's word decides how runs wait and end."""

from __future__ import annotations

import json

import pytest

from runs.models import LogChunk, RunProcess, SlurmJob
from tests.helpers.processes import ControllerProcess
from tests.helpers.site import module_site
from tests.runs.conftest import PROJECTS
from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace
from trainhub.sdk.compute import ComputeTarget, SlurmCompute
from trainhub.sdk.runconfig import PyTorchConfiguration

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, slurm_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm-site")
    controller = ControllerProcess(folder).start()
    try:
        with module_site(django_db_blocker, live_server_process, folder) as site:
            ws = Workspace.get("birds", url=site.url, token=site.token)
            target = ComputeTarget.attach(ws, "hpc", SlurmCompute.attach_configuration(partition="debug"))
            yield {"site": site, "ws": ws, "target": target, "slurm": slurm_cluster, "blocker": django_db_blocker}
    finally:
        controller.stop()


def config(site, script: str, arguments=(), **extra) -> ScriptRunConfig:
    ws = site["ws"]
    return ScriptRunConfig(
        source_directory=str(PROJECTS / "ddp"),
        script=script,
        arguments=list(arguments),
        compute_target="hpc",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        **extra,
    )


def stream_text(run_id: str, stream: str) -> str:
    return "\n".join(chunk.text for chunk in LogChunk.objects.filter(run__run_id=run_id, stream=stream))


def test_the_attached_partition_shows_slurms_nodes(site, db):
    target = site["target"]
    assert type(target).__name__ == "SlurmCompute" and target.partition == "debug"
    nodes = {node["name"]: node["state"] for node in target.list_nodes()}
    assert nodes == {"n1": "idle", "n2": "idle"}
    assert target.get_status().idle_node_count == 2


# Tests below read the database only inside `blocker.unblock()`, outside any transaction: the
# server and the Slurm tasks write to the same SQLite file meanwhile.


def test_the_guides_per_process_ddp_job_runs_as_one_slurm_job(site, tmp_path):
    src = config(site, "ddp_check.py", distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2))
    run = Experiment(site["ws"], "slurm-ddp").submit(src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    with site["blocker"].unblock():
        job = SlurmJob.objects.select_related("run").get(run__run_id=run.id)
        processes = list(RunProcess.objects.filter(run__run_id=run.id).order_by("rank"))
        logs = {rank: stream_text(run.id, f"std_log_process_{rank}") for rank in range(4)}
    assert job.job_id.isdigit()
    assert [(p.rank, p.node_rank, p.local_rank) for p in processes] == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    # Node rank 0 is the allocation's first host, node rank 1 its second.
    hosts = [f"slurm-{job.run.cluster_id}-{name}" for name in ("n1", "n1", "n2", "n2")]
    assert [p.node_name for p in processes] == hosts
    for rank, own in logs.items():
        assert f"rank {rank}/4 local {rank % 2} node {rank // 2} master 127.0.0.1" in own
        assert "all_reduce sum 10.0 expected 10.0" in own
    assert {f"logs/std_log_process_{r}.txt" for r in range(4)} <= set(run.get_file_names())
    run.download_file("outputs/result.json", str(tmp_path / "result.json"))
    assert json.loads((tmp_path / "result.json").read_text()) == {"world_size": 4, "sum": 10.0}
