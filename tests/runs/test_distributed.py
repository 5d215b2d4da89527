"""Distributed runs on two real nodes: per-process and per-node DDP launches, legacy arguments,
MPI, fail-fast teardown and gang scheduling."""

from __future__ import annotations

import json

import pytest

from metrics.models import MetricSeries
from runs.launch_plan import STORE_READY, STORE_STREAM
from runs.models import LogChunk, Run, RunProcess, RunStatus
from runs.system_metrics import MEMORY
from tests.helpers.processes import NodeProcess, pid_alive, wait_until
from tests.runs.conftest import PROJECTS, script_config
from trainhub.compute.models import Node
from trainhub.sandbox import box_uid
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.compute import ComputeTarget
from trainhub.sdk.exceptions import RunFailedError, UserErrorException
from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(cluster, live_server_process, transactional_db, tmp_path):
    nodes = [
        NodeProcess(
            cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_server_process.url, TRAINHUB_SYSTEM_METRICS_SECONDS="1"
        ).start(wait=False)
        for _ in range(2)
    ]
    wait_until(lambda: Node.objects.filter(cluster=cluster, state="idle").count() == 2, 60, message="two idle nodes")
    yield nodes
    for node in nodes:
        node.stop()


def ddp_config(ws, **extra):
    return script_config(ws, "ddp", "ddp_check.py", **extra)


def assert_every_rank_was_sampled(run, world: int, nodes=()) -> None:
    """Each rank's own memory, as its node sampled it (runs/system_metrics.py). If not, the failure
    shows when each rank ran and what the nodes logged (a rank 0 without a sample was seen once, in
    a clean-clone run)."""
    sampled = MetricSeries.objects.filter(run__run_id=run.id, name=MEMORY, min_value__gt=0)
    ranks = sorted(sampled.values_list("rank", flat=True))
    if ranks != list(range(world)):
        times = RunProcess.objects.filter(run__run_id=run.id).order_by("rank")
        ran = [(p.rank, p.node_name, p.started_at, p.ended_at) for p in times]
        pytest.fail(f"sampled ranks {ranks}; ranks ran {ran}\n" + "\n".join(node.log() for node in nodes))


def rank_lines(run, text: str) -> list[str]:
    from runs.models import LogChunk

    return [
        line for chunk in LogChunk.objects.filter(run__run_id=run.id) for line in chunk.text.split("\n") if text in line
    ]


def written_script_config(ws, folder, name: str, text: str, **extra) -> ScriptRunConfig:
    """A run of `text`, written as `name` into `folder`, on cpu-cluster in the curated CPU environment."""
    (folder / name).write_text(text)
    return ScriptRunConfig(
        source_directory=str(folder),
        script=name,
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.get(ws, "TrainHub-PyTorch-2.13-CPU"),
        **extra,
    )


def assert_completed(run) -> None:
    """The run completed; if not, the failure says why with every stream of the run (a rank that
    exits 1 after a good all_reduce was seen only under load, in a clean-clone run)."""
    details = run.wait_for_completion(raise_on_error=False)
    if details["status"] != "Completed":
        chunks = LogChunk.objects.filter(run__run_id=run.id).order_by("stream", "first_seq")
        logs = "\n".join(f"[{chunk.stream}] {chunk.text}" for chunk in chunks)
        pytest.fail(f"{details['status']}: {details.get('status_reason')}\n{details.get('error_traceback')}\n{logs}")


def assert_all_ranks_reduced(run, world: int) -> None:
    expected = float(world * (world + 1) // 2)
    lines = rank_lines(run, "all_reduce sum")
    assert len(lines) == world, lines
    assert all(f"all_reduce sum {expected} expected {expected}" in line for line in lines)


def test_per_process_launch_two_nodes_by_two(ws, two_nodes, tmp_path):
    src = ddp_config(ws, distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2))
    run = Experiment(ws, "ddp").submit(src)
    assert_completed(run)
    assert_all_ranks_reduced(run, 4)
    processes = list(RunProcess.objects.filter(run__run_id=run.id).order_by("rank"))
    assert [(p.rank, p.node_rank, p.local_rank) for p in processes] == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    assert len({p.node_name for p in processes}) == 2
    names = set(run.get_file_names())
    assert {f"logs/std_log_process_{r}.txt" for r in range(4)} <= names
    run.download_file("outputs/result.json", str(tmp_path / "result.json"))
    assert json.loads((tmp_path / "result.json").read_text()) == {"world_size": 4, "sum": 10.0}
    assert_every_rank_was_sampled(run, 4, two_nodes)
    # The ranks met at a store that node 0 started before them, in the run's box as the run's user.
    [ready] = [line for line in stream_text(run, STORE_STREAM).splitlines() if line.startswith(STORE_READY)]
    assert ready.endswith(f" as uid {box_uid('run', Run.objects.get(run_id=run.id).pk)}"), ready


@pytest.mark.parametrize(
    "launcher",
    [
        "python -m torch.distributed.launch --nproc_per_node 2 --nnodes 2 --node_rank $NODE_RANK "
        "--master_addr $MASTER_ADDR --master_port $MASTER_PORT --use_env ddp_check.py --epochs 1",
        "torchrun --nproc_per_node 2 --nnodes 2 --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} "
        "--master_port ${MASTER_PORT} ddp_check.py --epochs 1",
    ],
    ids=["torch.distributed.launch", "torchrun"],
)
def test_per_node_launch(ws, two_nodes, launcher):
    """The launcher forks the ranks, yet each rank gets its own log and its own process record."""
    run = Experiment(ws, "ddp-per-node").submit(per_node_config(ws, launcher))
    assert_completed(run)
    assert_all_ranks_reduced(run, 4)
    processes = list(RunProcess.objects.filter(run__run_id=run.id).order_by("rank"))
    assert [(p.rank, p.node_rank, p.local_rank, p.state) for p in processes] == [
        (0, 0, 0, "completed"),
        (1, 0, 1, "completed"),
        (2, 1, 0, "completed"),
        (3, 1, 1, "completed"),
    ]
    for rank in range(4):
        own = stream_text(run, f"std_log_process_{rank}")
        assert f"rank {rank}/4 local {rank % 2} node {rank // 2}" in own
        assert "all_reduce sum 10.0" in own and "\x1f" not in own
    names = set(run.get_file_names())
    assert {f"logs/std_log_process_{r}.txt" for r in range(4)} | {"logs/launcher_node_0.txt"} <= names
    # Each its own: the launcher's ranks are found by the pid they announced.
    assert_every_rank_was_sampled(run, 4, two_nodes)


def per_node_config(ws, launcher: str, **extra) -> ScriptRunConfig:
    return ScriptRunConfig(
        source_directory=str(PROJECTS / "ddp"),
        command=launcher.split(),
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        distributed_job_config=PyTorchConfiguration(node_count=2),
        **extra,
    )


def stream_text(run, stream: str) -> str:
    from runs.models import LogChunk

    return "\n".join(chunk.text for chunk in LogChunk.objects.filter(run__run_id=run.id, stream=stream))


def test_a_failing_rank_of_a_per_node_launch_is_named_with_its_traceback(ws, two_nodes):
    launcher = (
        "torchrun --nproc_per_node 2 --nnodes 2 --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} "
        "--master_port ${MASTER_PORT} ddp_check.py --fail-rank 3"
    )
    run = Experiment(ws, "ddp-per-node-fail").submit(per_node_config(ws, launcher))
    with pytest.raises(RunFailedError):
        run.wait_for_completion()
    details = run.get_details()
    assert details["failed_rank"] == 3, details["status_reason"]
    assert details["status_reason"].startswith("Rank 3 (node ")
    assert "rank 3 fails on purpose" in details["error_traceback"]
    assert "rank 3 fails on purpose" in stream_text(run, "std_log_process_3")

    def states():
        return dict(RunProcess.objects.filter(run__run_id=run.id).values_list("rank", "state"))

    # The other node stops its launcher once it sees the run failed.
    wait_until(lambda: "running" not in states().values(), 15, message=f"every rank stopped: {states()}")
    assert states()[3] == "failed" and set(states()) == {0, 1, 2, 3}, states()
    wait_until(lambda: Node.objects.filter(state="idle").count() == 2, 15, message="nodes idle again")


def test_a_per_node_launchs_rank_dying_in_native_code_is_named_with_its_crash_report(ws, two_nodes):
    """Its crash report (faulthandler's, written below Python) reaches its own log and the run page."""
    launcher = (
        "torchrun --nproc_per_node 2 --nnodes 2 --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} "
        "--master_port ${MASTER_PORT} ddp_check.py --crash-rank 3"
    )
    run = Experiment(ws, "ddp-per-node-crash").submit(per_node_config(ws, launcher))
    with pytest.raises(RunFailedError):
        run.wait_for_completion()
    details = run.get_details()
    assert details["failed_rank"] == 3, details["status_reason"]
    assert details["status_reason"].startswith("Rank 3 (node "), details["status_reason"]
    assert details["status_reason"].endswith(", reported by the launcher) exited with code 134 (SIGABRT).")
    assert details["error_traceback"].startswith("Fatal Python error: Aborted"), details["error_traceback"]
    assert 'ddp_check.py", line' in details["error_traceback"]
    own = stream_text(run, "std_log_process_3")
    assert "rank 3/4 local 1 node 1" in own and "Fatal Python error: Aborted" in own, own


def test_the_older_editions_arguments(ws, two_nodes):
    args = [
        "--dist-backend",
        "gloo",
        "--dist-url",
        "$AZ_BATCHAI_PYTORCH_INIT_METHOD",
        "--rank",
        "$AZ_BATCHAI_TASK_INDEX",
        "--world-size",
        2,
    ]
    src = ddp_config(
        ws, arguments=args, distributed_job_config=PyTorchConfiguration(communication_backend="Gloo", node_count=2)
    )
    run = Experiment(ws, "ddp-legacy").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    assert_all_ranks_reduced(run, 2)


def test_mpirun_across_two_nodes(ws, two_nodes, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("mpi4py\n")
    env = Environment.from_pip_requirements(name="mpi-env", file_path=str(requirements))
    src = ScriptRunConfig(
        source_directory=str(PROJECTS / "ddp"),
        script="mpi_allreduce.py",
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=env,
        distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=2),
    )
    run = Experiment(ws, "mpi").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    assert_mpi_ranks_ran_on_their_nodes(run, rank_lines(run, "mpi rank"))
    assert {f"logs/std_log_process_{r}.txt" for r in range(4)} <= set(run.get_file_names())
    assert_every_rank_was_sampled(run, 4, two_nodes)  # those of node 1 too, started by Open MPI's daemon there


def assert_mpi_ranks_ran_on_their_nodes(run, lines: list[str]) -> None:
    """Ranks 0-1 on node 0 and 2-3 on node 1, each in its own node's working folder."""
    assert sorted(line.split()[2] for line in lines) == ["0/4", "1/4", "2/4", "3/4"]
    assert all("sum=10" in line and "OMPI_COMM_WORLD_SIZE=4" in line for line in lines), lines
    nodes = dict(RunProcess.objects.filter(run__run_id=run.id).values_list("rank", "node_name"))
    assert len(set(nodes.values())) == 2
    for line in lines:
        rank = int(line.split()[2].split("/")[0])
        said = dict(part.split("=", 1) for part in line.split()[3:])
        assert said["OMPI_COMM_WORLD_RANK"] == str(rank)
        assert said["NODE_RANK"] == str(rank // 2), line
        assert said["cwd"].endswith(f"/{nodes[rank]}/{run.id}"), line


def test_a_failing_rank_stops_every_rank_and_is_named(ws, two_nodes):
    src = ddp_config(
        ws, arguments=["--fail-rank", 3], distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2)
    )
    run = Experiment(ws, "ddp-fail").submit(src)
    with pytest.raises(RunFailedError):
        run.wait_for_completion()
    details = run.get_details()
    assert details["failed_rank"] == 3
    assert "Rank 3" in details["status_reason"]
    assert "rank 3 fails on purpose" in details["error_traceback"]
    pids = list(RunProcess.objects.filter(run__run_id=run.id).values_list("pid", flat=True))
    wait_until(lambda: not any(pid_alive(pid) for pid in pids if pid), 10, message="every rank to stop")
    wait_until(lambda: Node.objects.filter(state="idle").count() == 2, 10, message="nodes idle again")


def test_a_two_node_run_waits_for_two_free_nodes(ws, cluster, transactional_db, tmp_path):
    first = NodeProcess(cluster, tmp_path).start()
    try:
        src = ddp_config(ws, distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2))
        run = Experiment(ws, "gang").submit(src)
        import time

        time.sleep(3)
        stored = Run.objects.get(run_id=run.id)
        assert stored.status == RunStatus.QUEUED and stored.dispatched_at is None
        assert Node.objects.get(name=first.name).state == "idle"
        # It takes the waiting run as it starts: idle for an instant only, so not waited for.
        second = NodeProcess(cluster, tmp_path).start(wait=False)
        try:
            assert run.wait_for_completion()["status"] == "Completed"
        finally:
            second.stop()
    finally:
        first.stop()


def test_more_nodes_than_the_cluster_allows_is_refused_at_submit(ws, cluster):
    src = ddp_config(ws, distributed_job_config=PyTorchConfiguration(node_count=3))
    with pytest.raises(UserErrorException, match="asks for 3 nodes but compute target 'cpu-cluster' has at most 2"):
        Experiment(ws, "too-big").submit(src)
    assert not Run.objects.exists()


def test_the_tutorials_mpi_script_runs_on_two_nodes(ws, two_nodes, tmp_path):
    """docs/tutorial.md's MPI step, as a reader copies it: its script and its submit."""
    from django.conf import settings

    tutorial = (settings.BASE_DIR / "docs" / "tutorial.md").read_text()
    script = tutorial.split("Save this as `mpi_allreduce.py` in the project folder:\n\n```python\n", 1)[1]
    src = written_script_config(
        ws,
        tmp_path,
        "mpi_allreduce.py",
        script.split("```", 1)[0],
        distributed_job_config=MpiConfiguration(node_count=2),
    )
    run = Experiment(ws, "mpi").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    assert sorted(rank_lines(run, "the sum over all ranks is 3")) == [
        "rank 0 of 2: the sum over all ranks is 3",
        "rank 1 of 2: the sum over all ranks is 3",
    ]


PROCESS_GROUP_LEFT_UP = """
import os

import torch.distributed as dist

dist.init_process_group("gloo", init_method="file://" + os.path.abspath("rendezvous"), rank=0, world_size=1)
destroy = dist.destroy_process_group


def destroy_and_say(*args, **kwargs):
    print("the process group ends as Python exits", flush=True)
    return destroy(*args, **kwargs)


dist.destroy_process_group = destroy_and_say
print("work done", flush=True)
"""


def test_a_process_group_a_script_leaves_up_is_ended_before_pythons_teardown(ws, two_nodes, tmp_path):
    """As the tutorial's MPI script does: left to Python's teardown, a gloo group now and then aborted
    its process after the work was done (trainhub/sdk/_whole_lines.py)."""
    src = written_script_config(ws, tmp_path, "left_up.py", PROCESS_GROUP_LEFT_UP)
    run = Experiment(ws, "left-up").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    text = "\n".join(run.iter_log())
    assert "work done\nthe process group ends as Python exits" in text, text


FAILS_THEN_TAKES_ITS_TIME = """
import sys
import time

import torch
import torch.distributed as dist


class SlowToGo:
    def __del__(self, sleep=time.sleep):
        sleep(3)


dist.init_process_group("gloo", init_method="env://")
if dist.get_rank() == 1:
    slow_to_go = SlowToGo()  # freed in Python's teardown, after the exit handlers
    print("rank 1 fails, then takes its time to exit", file=sys.stderr, flush=True)
    FAILURE
dist.all_reduce(torch.ones(1))  # rank 0 waits here for rank 1
"""


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        ('raise RuntimeError("it failed")', "RuntimeError: it failed"),
        ("sys.exit(3)", "exited with code 3"),
    ],
    ids=["exception", "sys.exit"],
)
def test_a_failing_rank_slow_to_exit_is_named_not_the_rank_its_failure_broke(ws, two_nodes, tmp_path, failure, said):
    """The exit handler ending a group left up (above) does not end a failing rank's: its peers,
    broken by its failure, would fail before it has exited, and be named instead."""
    src = written_script_config(
        ws,
        tmp_path,
        "fails.py",
        FAILS_THEN_TAKES_ITS_TIME.replace("FAILURE", failure),
        distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2),
    )
    run = Experiment(ws, "fails-slowly").submit(src)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["failed_rank"] == 1, details["status_reason"]
    assert said in details["status_reason"] + details["error_traceback"], details
    assert "rank 1 fails, then takes its time to exit" in details["error_traceback"]
