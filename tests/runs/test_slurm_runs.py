"""Runs on a Slurm cluster, on a real Slurm (tests/helpers/slurm.py: slurmctld and slurmd n1, n2 on
this host): the cluster is attached with the SDK, each run is one Slurm job whose task on each
allocated host runs TrainHub's node-side execution, and Slurm's word decides how runs wait and end."""

from __future__ import annotations

import json
import socket

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from metrics.models import MetricSeries
from runs import slurm as slurm_runs
from runs.models import LogChunk, Run, RunNode, RunProcess, RunStatus, RunStatusChange, SlurmJob
from runs.system_metrics import MEMORY
from tests.helpers.processes import ControllerProcess, pid_alive, run_folder, run_pids, wait_until
from tests.helpers.site import module_site
from tests.runs.builders import make_cluster, make_run
from tests.runs.conftest import PROJECTS
from tests.runs.test_distributed import assert_mpi_ranks_ran_on_their_nodes
from trainhub.compute.models import ComputeCluster
from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace
from trainhub.sdk.compute import ComputeTarget, SlurmCompute
from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, slurm_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm-site")
    controller = ControllerProcess(folder).start()
    try:
        with module_site(django_db_blocker, live_server_process, folder) as site:
            ws = Workspace.get("birds", url=site.url, token=site.token)
            target = ComputeTarget.attach(ws, "hpc", SlurmCompute.attach_configuration(partition="debug"))
            yield {
                "site": site,
                "ws": ws,
                "target": target,
                "slurm": slurm_cluster,
                "blocker": django_db_blocker,
                "controller": controller,
            }
    finally:
        controller.stop()


def config(site, script: str, arguments=(), project: str = "ddp", **extra) -> ScriptRunConfig:
    ws = site["ws"]
    return ScriptRunConfig(
        source_directory=str(PROJECTS / project),
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
        # Each rank's own memory, sampled by its Slurm task as a node samples it (runs/system_metrics.py).
        sampled = sorted(MetricSeries.objects.filter(run__run_id=run.id, name=MEMORY).values_list("rank", flat=True))
    assert sampled == [0, 1, 2, 3]
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


def test_the_per_node_torch_distributed_launch_job_runs_once_per_host(site):
    """`python -m torch.distributed.launch` on each allocated host (one Slurm task per node), with
    $NODE_RANK, $MASTER_ADDR and $MASTER_PORT expanded from the allocation."""
    launcher = (
        "python -m torch.distributed.launch --nproc_per_node 2 --nnodes 2 --node_rank $NODE_RANK "
        "--master_addr $MASTER_ADDR --master_port $MASTER_PORT --use_env ddp_check.py"
    )
    src = ScriptRunConfig(
        source_directory=str(PROJECTS / "ddp"),
        command=launcher.split(),
        compute_target="hpc",
        environment=Environment.get(workspace=site["ws"], name="TrainHub-PyTorch-2.13-CPU"),
        distributed_job_config=PyTorchConfiguration(node_count=2),
    )
    run = Experiment(site["ws"], "slurm-per-node").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    with site["blocker"].unblock():
        logs = {rank: stream_text(run.id, f"std_log_process_{rank}") for rank in range(4)}
    for rank, own in logs.items():
        assert f"rank {rank}/4 local {rank % 2} node {rank // 2} master 127.0.0.1" in own
        assert "all_reduce sum 10.0 expected 10.0" in own
    assert {"logs/launcher_node_0.txt", "logs/launcher_node_1.txt"} <= set(run.get_file_names())


def test_the_guides_mpi_job_runs_mpirun_in_one_slurm_task_per_node_with_every_ranks_log_live(site):
    """MpiConfiguration(node_count=2, process_count_per_node=2): one Slurm task per host holding
    the host's two CPUs; mpirun on the first host starts all four ranks, Open MPI's daemon on the
    second comes from that host's task. Each rank's line reaches its own log while the ranks hold."""
    src = config(
        site,
        "mpi_hold.py",
        project="slurm",
        distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=2),
    )
    run = Experiment(site["ws"], "slurm-mpi").submit(src)

    def said() -> dict[int, list[str]]:
        with site["blocker"].unblock():
            return {
                rank: [
                    line for line in stream_text(run.id, f"std_log_process_{rank}").split("\n") if "mpi rank" in line
                ]
                for rank in range(4)
            }

    ended = ("Completed", "Failed", "Canceled")
    wait_until(lambda: all(said().values()) or status(site, run.id) in ended, 120, message="each rank's line")
    assert all(said().values()), run.get_details()["status_reason"]
    assert status(site, run.id) == "Running"
    # One task per host, each holding the host's two CPUs for mpirun's two ranks there.
    job_id = slurm_job(site, run.id).job_id
    held = site["slurm"].slurm("squeue", "--noheader", f"--jobs={job_id}", "--Format=NumNodes,NumTasks,NumCPUs")
    assert held.split() == ["2", "2", "4"]
    release(site, run.id)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    lines = [line for own in said().values() for line in own]
    with site["blocker"].unblock():
        assert all(f"rank {r} released" in stream_text(run.id, f"std_log_process_{r}") for r in range(4))
    with site["blocker"].unblock():
        assert_mpi_ranks_ran_on_their_nodes(run, lines)
        assert (
            list(RunProcess.objects.filter(run__run_id=run.id).order_by("rank").values_list("state", flat=True))
            == ["completed"] * 4
        )
    assert {f"logs/std_log_process_{r}.txt" for r in range(4)} <= set(run.get_file_names())


def hold(site, nodes: int, per_node: int, seconds: float = 120, name: str = "slurm-hold", **extra):
    """A run of `nodes` x `per_node` ranks that each say where they are and hold until released."""
    src = config(
        site,
        "hold.py",
        ["--seconds", seconds],
        project="slurm",
        distributed_job_config=PyTorchConfiguration(process_count=nodes * per_node, node_count=nodes),
        **extra,
    )
    return Experiment(site["ws"], name).submit(src)


def held(site, run_id: str) -> int:
    with site["blocker"].unblock():
        return sum(c.text.count("holding rank") for c in LogChunk.objects.filter(run__run_id=run_id))


def status(site, run_id: str) -> str:
    with site["blocker"].unblock():
        return Run.objects.values_list("status", flat=True).get(run_id=run_id)


def slurm_job(site, run_id: str) -> SlurmJob:
    """The run's job as TrainHub last recorded it; a blank one until the controller's Slurm thread
    takes the run to submit it."""
    with site["blocker"].unblock():
        return SlurmJob.objects.filter(run__run_id=run_id).first() or SlurmJob()


def run_pk(site, run_id: str) -> int:
    with site["blocker"].unblock():
        return Run.objects.values_list("pk", flat=True).get(run_id=run_id)


def release(site, run_id: str) -> None:
    with site["blocker"].unblock():
        for rank in RunNode.objects.filter(run__run_id=run_id).values_list("node_rank", flat=True):
            (run_folder(run_id, rank) / "release").write_text("")


def test_a_job_larger_than_the_partition_waits_queued_with_slurms_reason_until_a_node_is_added(site):
    slurm = site["slurm"]
    run = hold(site, nodes=3, per_node=1, seconds=0, name="slurm-three")
    wait_until(lambda: slurm_job(site, run.id).reason == "PartitionNodeLimit", 30, message="Slurm's reason")
    details = run.get_details()
    assert details["status"] == "Queued"
    assert (details["slurm_job"]["state"], details["slurm_job"]["reason"]) == ("PENDING", "PartitionNodeLimit")
    with site["blocker"].unblock():
        client = Client()
        client.force_login(site["site"].owner)
        page = client.get(f"/w/birds/runs/{run.id}/").content.decode()
    job_id = slurm_job(site, run.id).job_id
    assert f"Slurm holds job {job_id} pending: PartitionNodeLimit" in page
    slurm.set_partition_nodes(["n1", "n2", "n3"])
    try:
        slurm.start_slurmd("n3", wait=False)
        assert run.wait_for_completion()["status"] == "Completed"
        assert held(site, run.id) == 3
    finally:
        slurm.set_partition_nodes(["n1", "n2"])
        slurm.stop_slurmd("n3")


def test_two_runs_that_need_the_whole_partition_run_one_after_the_other(site):
    first = hold(site, nodes=2, per_node=2, name="slurm-whole")
    second = hold(site, nodes=2, per_node=2, seconds=0, name="slurm-whole")
    wait_until(lambda: held(site, first.id) == 4, 90, message="the first run's four ranks")
    # Slurm holds the second back while the first has every CPU of the partition.
    wait_until(lambda: slurm_job(site, second.id).state == "PENDING", 10, message="the second job pending")
    assert status(site, second.id) == "Queued" and held(site, second.id) == 0
    release(site, first.id)
    assert first.wait_for_completion()["status"] == "Completed"
    assert second.wait_for_completion()["status"] == "Completed"
    with site["blocker"].unblock():
        first_end = RunStatusChange.objects.get(run__run_id=first.id, status="Completed").at
        second_start = RunStatusChange.objects.get(run__run_id=second.id, status="Preparing").at
    assert first_end <= second_start
    assert slurm_job(site, first.id).nodes == slurm_job(site, second.id).nodes == "n[1-2]"


def test_cancel_scancels_the_job_and_every_rank_ends(site):
    run = hold(site, nodes=2, per_node=2, name="slurm-cancel")
    wait_until(lambda: held(site, run.id) == 4, 90, message="four ranks holding")
    ranks = [pid for pid, _ in run_pids(run.id)]
    assert len(ranks) >= 4
    run.cancel()
    wait_until(lambda: not any(pid_alive(pid) for pid in ranks), 5, message="every rank's process ended")
    wait_until(lambda: status(site, run.id) == "Canceled", 10, message="the run Canceled")
    job_id = slurm_job(site, run.id).job_id
    assert site["slurm"].slurm("squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T").strip() in (
        "CANCELLED",
        "COMPLETING",
    )


def shown_on_its_page(site, run_id: str, text: str) -> bool:
    with site["blocker"].unblock():
        client = Client()
        client.force_login(site["site"].owner)
        return escape(text) in client.get(f"/w/birds/runs/{run_id}/").content.decode()


def job_state(site, job_id: str) -> str:
    return site["slurm"].slurm("squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T").strip()


def test_a_slurm_time_limit_ends_the_run_with_that_reason(site):
    """The run's time limit is the job's --time; when Slurm ends the job at it (TIMEOUT), the run
    fails with that reason, on its page, and its ranks end."""
    run = hold(site, nodes=1, per_node=1, name="slurm-time-limit", max_run_duration_seconds=600)
    wait_until(lambda: held(site, run.id) == 1, 90, message="the rank holding")
    ranks = [pid for pid, _ in run_pids(run.id)]
    job_id = slurm_job(site, run.id).job_id
    slurm = site["slurm"]
    assert slurm.slurm("squeue", "--noheader", f"--jobs={job_id}", "--format=%l").strip() == "10:00"
    # As if its ten minutes were up: Slurm's own time-limit check ends it at its next pass.
    slurm.slurm("scontrol", "update", f"JobId={job_id}", "EndTime=now")
    wait_until(lambda: status(site, run.id) == "Failed", 90, message="the run failed")
    reason = run.get_details()["status_reason"]
    assert reason.startswith("Slurm time limit of 1 min reached: Slurm stopped job") and job_id in reason, reason
    assert shown_on_its_page(site, run.id, reason)
    wait_until(lambda: not any(pid_alive(pid) for pid in ranks), 30, message="the rank's process ended")
    assert job_state(site, job_id) in ("TIMEOUT", "COMPLETING")


def test_a_job_scancelled_behind_trainhubs_back_fails_its_run(site):
    run = hold(site, nodes=1, per_node=1, name="slurm-scancelled")
    wait_until(lambda: held(site, run.id) == 1, 90, message="the rank holding")
    ranks = [pid for pid, _ in run_pids(run.id)]
    job_id = slurm_job(site, run.id).job_id
    site["slurm"].slurm("scancel", job_id)
    wait_until(lambda: status(site, run.id) == "Failed", 30, message="the run failed")
    assert run.get_details()["status_reason"] == slurm_runs.END_REASONS["CANCELLED"].format(job_id=job_id)
    wait_until(lambda: not any(pid_alive(pid) for pid in ranks), 10, message="the rank's process ended")


def test_a_run_whose_job_slurm_never_had_is_failed_by_the_controller(site):
    with site["blocker"].unblock():
        cluster = ComputeCluster.objects.get(workspace__name="birds", name="hpc")
        run = make_run(cluster.workspace, cluster, experiment="slurm-forgotten", status=RunStatus.RUNNING)
        # An id this Slurm never handed out (its ids start at 1), as if its state had been lost.
        SlurmJob.objects.create(run=run, job_id="999999", state="RUNNING", submitted_at=timezone.now())
    wait_until(lambda: status(site, run.run_id) == "Failed", 30, message="the run failed")
    reason = slurm_runs.JOB_FORGOTTEN.format(job_id="999999")
    assert shown_on_its_page(site, run.run_id, reason)


def test_a_host_whose_task_hangs_fails_the_run_naming_it(site):
    """n2's task and ranks frozen while its slurmd answers: Slurm sees nothing wrong, the task's
    heartbeat stops, and the controller fails the run naming n2 and scancels its job."""
    slurm = site["slurm"]
    run = hold(site, nodes=2, per_node=1, name="slurm-hung")
    wait_until(lambda: held(site, run.id) == 2, 90, message="two ranks holding")
    ranks = [pid for pid, _ in run_pids(run.id)]
    job_id = slurm_job(site, run.id).job_id
    frozen = slurm.freeze_steps("n2")
    try:
        wait_until(lambda: status(site, run.id) == "Failed", 60, message="the run failed")
        reason = run.get_details()["status_reason"]
        assert reason == slurm_runs.TASK_LOST.format(hosts="n2", seconds=slurm_runs.TASK_SILENCE_SECONDS, job_id=job_id)
        assert shown_on_its_page(site, run.id, reason)
        wait_until(lambda: job_state(site, job_id) in ("CANCELLED", "COMPLETING"), 10, message="the job cancelled")
    finally:
        slurm.thaw(frozen)
    wait_until(lambda: not any(pid_alive(pid) for pid in ranks), 30, message="every rank's process ended")


def test_a_job_whose_scancel_found_slurm_not_answering_is_scancelled_once_it_answers(site):
    """A one-host run's task hangs while slurmctld is down: the run fails naming its host but its
    scancel fails, and nothing else would end the job (no other task exits to end its step) while
    it holds the host. Once Slurm answers again, the controller scancels it."""
    slurm = site["slurm"]
    run = hold(site, nodes=1, per_node=1, name="slurm-scancel-retried")
    wait_until(lambda: held(site, run.id) == 1, 90, message="the rank holding")
    job = slurm_job(site, run.id)
    frozen = slurm.freeze_steps(job.nodes)
    try:
        slurm.stop_controller()
        try:
            wait_until(lambda: status(site, run.id) == "Failed", 60, message="the run failed")
            assert f"Slurm node {job.nodes} failed" in run.get_details()["status_reason"]
            # Slurm's commands wait for a controller that is down (up to TrainHub's 20 s for one).
            failed = f"scancel of job {job.job_id} of run {run_pk(site, run.id)} failed"
            wait_until(lambda: failed in site["controller"].log(), 60, message="the scancel failed")
        finally:
            slurm.start_controller()
        wait_until(lambda: job_state(site, job.job_id) in ("CANCELLED", "COMPLETING"), 30, message="the job cancelled")
    finally:
        slurm.thaw(frozen)
    slurm.wait_nodes_idle(["n1", "n2"])


def test_a_run_submitted_while_slurmctld_is_down_waits_and_runs_once_it_is_back(site):
    """sbatch waits (up to 20 s) for a slurmctld that is down: the controller's Slurm thread waits
    with it, and neither the submit nor a local cluster's placing does. When sbatch gives up the run
    stays Queued, saying why, and its job is submitted once slurmctld answers again."""
    slurm = site["slurm"]
    with site["blocker"].unblock():
        make_cluster(site["site"].workspace, name="cpu", provisioner="manual", max_nodes=1)
    site["site"].start_nodes("cpu", 1)
    slurm.stop_controller()
    try:
        waiting = hold(site, nodes=1, per_node=1, seconds=0, name="slurm-while-down")
        local = ScriptRunConfig(
            source_directory=str(PROJECTS / "slurm"),
            script="hold.py",
            arguments=["--seconds", 0],
            compute_target="cpu",
            environment=Environment.get(workspace=site["ws"], name="TrainHub-PyTorch-2.13-CPU"),
        )
        done = Experiment(site["ws"], "local-while-slurm-down").submit(local).wait_for_completion()
        assert done["status"] == "Completed"
        # Meanwhile the Slurm run's sbatch is still waiting: no job, the run Queued.
        assert (status(site, waiting.id), slurm_job(site, waiting.id).job_id) == ("Queued", "")
        said = slurm_runs.SBATCH_UNANSWERED.split("{")[0]
        wait_until(lambda: slurm_job(site, waiting.id).reason.startswith(said), 60, message="the sbatch gave up")
        details = waiting.get_details()
        assert details["status"] == "Queued", details
        assert details["slurm_job"]["reason"].startswith(said) and details["slurm_job"]["job_id"] == ""
    finally:
        slurm.start_controller()
    assert waiting.wait_for_completion()["status"] == "Completed"
    assert slurm_job(site, waiting.id).job_id


def test_a_host_whose_task_never_beats_fails_the_run_naming_it(site):
    """The allocated host's task hangs before its first heartbeat (here its database never answers),
    as a host that dies between Slurm's allocation and the task's start: Slurm sees the job running
    until SlurmdTimeout, and the controller fails the run naming the host and scancels the job."""
    slurm = site["slurm"]
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        with slurm.node_settings(DATABASE_URL=f"postgres://trainhub:none@127.0.0.1:{silent.getsockname()[1]}/none"):
            run = hold(site, nodes=1, per_node=1, name="slurm-never-beat")
            wait_until(lambda: status(site, run.id) == "Failed", 90, message="the run failed")
        job = slurm_job(site, run.id)
        reason = run.get_details()["status_reason"]
        assert reason == slurm_runs.TASK_NEVER_BEAT.format(
            hosts=job.nodes, seconds=slurm_runs.TASK_SILENCE_SECONDS, job_id=job.job_id
        )
        assert shown_on_its_page(site, run.id, reason)
        wait_until(lambda: job_state(site, job.job_id) in ("CANCELLED", "COMPLETING"), 30, message="the job cancelled")
    finally:
        silent.close()
    slurm.wait_nodes_idle(["n1", "n2"])


def test_a_host_that_dies_fails_the_run_naming_it(site):
    """Last of the module: n2 is down until its slurmd is started again."""
    slurm = site["slurm"]
    run = hold(site, nodes=2, per_node=1, name="slurm-node-fail")
    wait_until(lambda: held(site, run.id) == 2, 90, message="two ranks holding")
    ranks = [pid for pid, _ in run_pids(run.id)]
    slurm.kill_host("n2")
    try:
        # The task on n2 stops beating (the controller fails the run within seconds); Slurm declares
        # the host dead after SlurmdTimeout (6 s here) and a ping that times out: whichever is first
        # names n2.
        wait_until(lambda: status(site, run.id) == "Failed", 90, message="the run failed")
        reason = run.get_details()["status_reason"]
        assert "node n2 failed" in reason, reason
        assert shown_on_its_page(site, run.id, reason)
        wait_until(lambda: not any(pid_alive(pid) for pid in ranks), 30, message="every rank's process ended")
    finally:
        slurm.start_slurmd("n2")
