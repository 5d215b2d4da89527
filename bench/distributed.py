"""Distributed figures: a 2 nodes × 2 processes gloo DDP job through TrainHub against the same job
started by hand with torchrun, and the time from a rank failing to every rank stopped. Where this
machine can run the test Slurm (tests/helpers/slurm.py: slurm-wlm and munge installed, root), the
same job also on a Slurm partition through TrainHub and by hand with srun, one run each. Each DDP
figure comes with init_process_group's wait (the last rank reaching it -> the last returning). With
`demo`, the DDP job on `make run`'s cluster instead, its second node cold each time (the provisioner
adds it). With `nodes`, only the local provisioner's decision to add a node -> the node ready, with
a new process and with the standby it keeps warm. With `docker`, the DDP job in a Docker environment
(every rank, and the rendezvous store, in a container of its image) through TrainHub."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _harness import Harness, submit

from runs.launch_plan import STORE_READY
from tests.helpers.ports import free_port

WORKLOAD = textwrap.dedent(
    """
    import sys, time
    import torch, torch.distributed as dist
    reached = time.time()
    dist.init_process_group("gloo", init_method="env://")
    print(f"init_process_group {reached:.6f} {time.time():.6f}", flush=True)
    torch.manual_seed(dist.get_rank())
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(int(sys.argv[1])):
        optimizer.zero_grad()
        model(torch.randn(64, 256)).pow(2).mean().backward()
        optimizer.step()
    dist.barrier()
    dist.destroy_process_group()
    """
)
FAILING = textwrap.dedent(
    """
    import os, time
    time.sleep(4)
    if os.environ["RANK"] == "3":
        print("failing at", time.time(), flush=True)
        raise SystemExit(3)
    time.sleep(600)
    """
)
STEPS = int(os.environ.get("BENCH_STEPS", "400"))
DEMO_CLUSTER = "cpu-cluster"
DEMO_LOG = Path()
NODE_STARTS = 5
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))  # 0: only the rank-failure figure
# One srun task per rank, its variables from Slurm's, as a user writes it by hand.
SRUN_RANK = (
    "RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID MASTER_ADDR=127.0.0.1 "
    'MASTER_PORT={port} OMP_NUM_THREADS=1 exec "$0" "$@"'
)


def by_hand(python: Path, folder: Path) -> tuple[float, str]:
    """torchrun on two "nodes" of this machine: (seconds, what the ranks printed)."""
    torchrun = python.parent / "torchrun"
    started = time.monotonic()
    outputs = [tempfile.TemporaryFile() for _ in range(2)]
    # Not a fixed port: two benches of two sessions on one machine would meet at the same store.
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                str(torchrun),
                "--nnodes",
                "2",
                "--nproc_per_node",
                "2",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                str(folder / "work.py"),
                str(STEPS),
            ],
            cwd=folder,
            stdout=outputs[rank],
            stderr=subprocess.DEVNULL,
        )
        for rank in range(2)
    ]
    codes = [p.wait() for p in processes]
    elapsed = time.monotonic() - started
    assert codes == [0, 0], codes
    text = ""
    for output in outputs:
        output.seek(0)
        text += output.read().decode(errors="replace")
        output.close()
    return elapsed, text


INIT_LINE = re.compile(r"init_process_group (\d+\.\d+) (\d+\.\d+)")


def init_wait(text: str) -> float:
    """How long after the last rank reached init_process_group the last one returned from it."""
    # Two ranks of one torchrun share its output: one's line can end after the other's began.
    pairs = [(float(reached), float(returned)) for reached, returned in INIT_LINE.findall(text)]
    assert len(pairs) == 4, text[-2000:]
    return max(returned for _, returned in pairs) - max(reached for reached, _ in pairs)


STORE_LINE = re.compile(re.escape(STORE_READY) + r" on port \d+ at (\d+\.\d+)")


def store_lag(text: str) -> float:
    """How long after the last rank reached init_process_group the run's store was up (negative:
    before it)."""
    match = STORE_LINE.search(text)
    assert match, text[-2000:]
    return float(match.group(1)) - max(float(reached) for reached, _ in INIT_LINE.findall(text))


def run_log(run_id: str) -> str:
    from runs.models import LogChunk

    return "\n".join(chunk.text for chunk in LogChunk.objects.filter(run__run_id=run_id))


def ddp_figures(ws, folder: Path, python: Path, target: str, label: str) -> float:
    """REPEATS runs of the 2 x 2 job through TrainHub and by hand with torchrun, alternating;
    prints the times, their ratio and init_process_group's wait, returns TrainHub's median."""
    from runs.models import Run

    hand, hub, hand_init, hub_init, loads, placed, lags = [], [], [], [], [], [], []
    for _ in range(REPEATS):
        before_each(target)
        loads.append(os.getloadavg()[0])
        seconds, text = by_hand(python, folder)
        hand.append(seconds)
        hand_init.append(init_wait(text))
        before_each(target)
        started = time.monotonic()
        run = through_trainhub(ws, folder, "work.py", [STEPS], target=target)
        assert run.wait_for_completion()["status"] == "Completed"
        hub.append(time.monotonic() - started)
        hub_init.append(init_wait(run_log(run.id)))
        lags.append(store_lag(run_log(run.id)))
        stored = Run.objects.get(run_id=run.id)
        placed.append((stored.dispatched_at - stored.created_at).total_seconds())
    ratio = statistics.median(hub) / statistics.median(hand)
    print(
        f"2 nodes x 2 processes gloo DDP, {STEPS} steps, {label}: TrainHub median {statistics.median(hub):.2f} s "
        f"(submit to Completed; {', '.join(f'{x:.2f}' for x in hub)}), torchrun by hand median "
        f"{statistics.median(hand):.2f} s ({', '.join(f'{x:.2f}' for x in hand)}), ratio {ratio:.3f} (target <= 1.0); "
        f"submit -> placed on its nodes median {statistics.median(placed):.3f} s, max {max(placed):.3f} s; "
        f"load {min(loads):.1f} to {max(loads):.1f} (uptime: {uptime()})"
    )
    print(
        f"init_process_group, last rank reaching it -> last rank returning, per-process launch ({label}): "
        f"median {statistics.median(hub_init) * 1000:.1f} ms, max {max(hub_init) * 1000:.1f} ms (target <= 20 ms); "
        f"torchrun by hand median {statistics.median(hand_init) * 1000:.1f} ms, max {max(hand_init) * 1000:.1f} ms; "
        f"TrainHub's store up {', '.join(f'{lag * 1000:.1f}' for lag in lags)} ms after the last rank reached it "
        "(negative: before)"
    )
    return statistics.median(hub)


def docker_figures(ws, folder: Path) -> None:
    """REPEATS runs of the 2 x 2 job in a Docker environment: submit to Completed and
    init_process_group's wait (the store in its container, up before the ranks' containers start)."""
    from trainhub.environments.docker_builder import DEFAULT_BASE_IMAGE, engine_problem
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig
    from trainhub.sdk.environment import CondaDependencies
    from trainhub.sdk.runconfig import PyTorchConfiguration

    problem = engine_problem()
    if problem:
        print(f"Docker launches: not measured ({problem})")
        return
    env = Environment("bench-docker-torch")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["torch==2.13.0", "numpy"])
    env.docker.enabled = True
    env.docker.base_image = DEFAULT_BASE_IMAGE
    env = env.register(ws)

    def run(steps: int):
        src = ScriptRunConfig(
            source_directory=str(folder),
            script="work.py",
            arguments=[steps],
            compute_target="cpu",
            environment=env,
            distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
        )
        submitted = Experiment(ws, "bench-ddp-docker").submit(src, show_progress=False)
        assert submitted.wait_for_completion()["status"] == "Completed"
        return submitted

    run(10)  # builds the image
    totals, waits, loads = [], [], []
    for _ in range(REPEATS):
        loads.append(os.getloadavg()[0])
        started = time.monotonic()
        done = run(STEPS)
        totals.append(time.monotonic() - started)
        waits.append(init_wait(run_log(done.id)))
    print(
        f"2 nodes x 2 processes gloo DDP, {STEPS} steps, Docker environment (ranks and store in containers): "
        f"TrainHub median {statistics.median(totals):.2f} s ({', '.join(f'{x:.2f}' for x in totals)}); "
        f"init_process_group, last rank reaching it -> last rank returning: median "
        f"{statistics.median(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms (target <= 20 ms); "
        f"load {min(loads):.1f} to {max(loads):.1f} (uptime: {uptime()})"
    )


def before_each(target: str) -> None:
    """On the demo cluster: back to one node and a loaded standby, so that each run's second node is
    the provisioner's to add (cold)."""
    if target != DEMO_CLUSTER:
        return
    from trainhub.compute.models import Node

    live = Node.objects.filter(cluster__name=DEMO_CLUSTER, state__in=["idle", "busy", "stopping"])
    while live.count() != 1 or Node.objects.filter(cluster__name=DEMO_CLUSTER, state="idle").count() != 1:
        time.sleep(0.1)
    while not standby_waiting():
        time.sleep(0.1)


def through_trainhub(ws, folder: Path, script: str, arguments=(), target: str = "cpu"):
    from trainhub.sdk.runconfig import PyTorchConfiguration

    return submit(
        ws,
        folder,
        script,
        arguments,
        experiment="bench-ddp",
        compute_target=target,
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
    )


def slurm_folder() -> Path | None:
    """The test Slurm's folder, named in the environment before Django reads its settings; None
    where this machine cannot run it."""
    from tests.helpers.slurm import slurm_missing

    missing = slurm_missing()
    if missing:
        print(f"No Slurm figures: {missing}")
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    os.chmod(folder, 0o755)
    os.environ.update(
        {
            "TRAINHUB_SLURM_CONF": str(folder / "slurm.conf"),
            "TRAINHUB_SLURM_NODE_ENV_FILE": str(folder / "node.env"),
            "TRAINHUB_SLURM_JOB_LOG_DIR": str(folder / "jobs"),
        }
    )
    return folder


def by_srun(slurm, python: Path, folder: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            "srun",
            "--partition=debug",
            "--nodes=2",
            "--ntasks-per-node=2",
            f"--chdir={folder}",
            "/bin/sh",
            "-c",
            SRUN_RANK.format(port=free_port()),
            str(python),
            str(folder / "work.py"),
            str(STEPS),
        ],
        env=slurm.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.monotonic() - started


def slurm_figures(harness, server, ws, folder: Path, python: Path, slurm_dir: Path, local: float) -> None:
    from tests.helpers.processes import process_env
    from tests.helpers.slurm import SlurmCluster
    from trainhub.sdk.compute import ComputeTarget, SlurmCompute

    slurm = SlurmCluster(
        slurm_dir / "slurm.conf", process_env(TRAINHUB_NODE_SERVER_URL=server.url), slurm_dir / "node.env"
    )
    try:
        slurm.start()
        # sbatch runs in the controller's Slurm thread: without a controller the run stays Queued.
        harness.processes.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "trainhub_controller"],
                cwd=Path(__file__).resolve().parents[1],
                env=process_env(TRAINHUB_NODE_SERVER_URL=server.url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ComputeTarget.attach(ws, "hpc", SlurmCompute.attach_configuration(partition="debug"))
        through_trainhub(ws, folder, "work.py", [10], target="hpc").wait_for_completion()  # warm: first task
        hand = by_srun(slurm, python, folder)
        started = time.monotonic()
        run = through_trainhub(ws, folder, "work.py", [STEPS], target="hpc")
        run.wait_for_completion()
        hub = time.monotonic() - started
        print(
            f"2 nodes x 2 processes gloo DDP, {STEPS} steps, one run each: local cluster {local:.2f} s, "
            f"Slurm through TrainHub {hub:.2f} s (submit to Completed), bare srun {hand:.2f} s; "
            f"Slurm/srun {hub / hand:.3f} (target <= 1.1), local/Slurm {local / hub:.3f}; "
            f"init_process_group's wait on Slurm {init_wait(run_log(run.id)) * 1000:.1f} ms; uptime: {uptime()}"
        )
    finally:
        slurm.stop()
        shutil.rmtree(slurm_dir, ignore_errors=True)


def node_start_figures(harness, workspace) -> None:
    """The local provisioner deciding to add a node -> that node ready (registered idle, able to
    take a job), each of NODE_STARTS nodes in turn: with a new process each time
    (TRAINHUB_LOCAL_STANDBY=false, as before standbys) and with the standby it keeps."""
    from trainhub.compute.models import ComputeCluster

    for standby in (False, True):
        mode = "standby" if standby else "new process"
        cluster = ComputeCluster.objects.create(
            workspace=workspace,
            name=f"local-{'standby' if standby else 'cold'}",
            vm_size="LOCAL_CPU",
            min_nodes=0,
            max_nodes=NODE_STARTS + 1,
            provisioner="local",
        )
        log = harness.data_dir / "logs" / f"node-{workspace.name}-{cluster.name}.log"

        env = {**os.environ, "TRAINHUB_LOCAL_STANDBY": str(standby), "TRAINHUB_NODE_SERVER_URL": harness.server_url}
        controller = subprocess.Popen(
            [sys.executable, "manage.py", "trainhub_controller"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        harness.processes.append(controller)
        figures, loads = [], []
        for count in range(1, NODE_STARTS + 1):
            # The standby of this round has loaded (as it has between two jobs on a real cluster).
            while standby and len(log_lines(log, "waiting for the provisioner")) < count:
                time.sleep(0.1)
            loads.append(os.getloadavg()[0])
            ComputeCluster.objects.filter(pk=cluster.pk).update(min_nodes=count)
            while len(ready := log_lines(log, "after the provisioner's decision")) < count:
                time.sleep(0.05)
            figures.append(float(ready[-1].rsplit(" ready ", 1)[1].split()[0]))
        controller.terminate()
        controller.wait(30)
        print(
            f"local provisioner decision -> node ready ({mode}), {NODE_STARTS} nodes: median "
            f"{statistics.median(figures):.3f} s, max {max(figures):.3f} s (target <= 0.5 s); "
            f"load {min(loads):.1f} to {max(loads):.1f} (uptime: {uptime()})"
        )


def log_lines(log: Path, marker: str) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if marker in line]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def demo_cluster(harness, workspace):
    """`make run`'s cluster (local provisioner, one node warm, a standby, up to four) and its
    controller; idle nodes go after 1 s instead of 600 so that each run's second node is cold."""
    from django.contrib.auth import get_user_model

    from trainhub.compute.models import ComputeCluster
    from trainhub.compute.services import seed_demo

    seed_demo(workspace=workspace, user=get_user_model().objects.get(username="bench"))
    ComputeCluster.objects.filter(workspace=workspace, name=DEMO_CLUSTER).update(idle_seconds_before_scaledown=1)
    controller = subprocess.Popen(
        [sys.executable, "manage.py", "trainhub_controller"],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TRAINHUB_NODE_SERVER_URL": harness.server_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    harness.processes.append(controller)
    global DEMO_LOG
    DEMO_LOG = harness.data_dir / "logs" / f"node-{workspace.name}-{DEMO_CLUSTER}.log"


def standby_waiting() -> bool:
    """A standby of the demo cluster has loaded and waits (its pid is no node's yet)."""
    from trainhub.compute.models import Node

    said = {int(line.split("(pid ")[1].split(")")[0]) for line in log_lines(DEMO_LOG, "waiting for the provisioner")}
    return bool(said - set(Node.objects.values_list("pid", flat=True)))


def main() -> None:
    if sys.argv[1:] == ["nodes"]:  # only the local provisioner's node starts
        with Harness() as harness:
            _, workspace, _, _ = harness.workspace()
            harness.server()
            node_start_figures(harness, workspace)
        return
    if sys.argv[1:] == ["docker"]:  # only the DDP job in a Docker environment
        with Harness() as harness:
            _, ws = harness.sdk_workspace(nodes=2)
            folder = Path(tempfile.mkdtemp(prefix="bench-ddp-docker-"))
            (folder / "work.py").write_text(WORKLOAD)
            docker_figures(ws, folder)
        return
    demo = sys.argv[1:] == ["demo"]
    slurm_dir = None if demo else slurm_folder()
    with Harness() as harness:
        server, ws = harness.sdk_workspace(nodes=0 if demo else 2)
        from django.conf import settings

        from runs.models import LogChunk, Run, RunProcess
        from trainhub.environments.builders import materialise_environment
        from trainhub.workspaces.models import Workspace

        target = "cpu"
        if demo:
            demo_cluster(harness, Workspace.objects.get(name="bench"))
            target = DEMO_CLUSTER
        folder = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
        (folder / "work.py").write_text(WORKLOAD)
        (folder / "fail.py").write_text(FAILING)
        through_trainhub(ws, folder, "work.py", [10], target=target).wait_for_completion()  # builds the environment
        spec = Run.objects.latest("id").environment_spec
        python = materialise_environment(
            spec, cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR), log=lambda _: None
        ).python

        if REPEATS:
            label = "make run's demo cluster, second node cold (its standby)" if demo else "two nodes idle"
            hub = ddp_figures(ws, folder, python, target, label)
            if slurm_dir is not None:
                slurm_figures(harness, server, ws, folder, python, slurm_dir, hub)
        if demo:
            return

        run = through_trainhub(ws, folder, "fail.py")

        def log_text() -> str:
            return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run.id))

        run.wait_for_completion(raise_on_error=False)
        # When each node saw its ranks end (a rank's pid is its box's, not one to watch from here).
        processes = RunProcess.objects.filter(run__run_id=run.id)
        while processes.filter(ended_at__isnull=True).exists():  # the other node may still be stopping
            time.sleep(0.05)
        ended = [p.ended_at for p in processes]
        gone_at = max(ended).timestamp()
        failed_at = float(log_text().split("failing at ", 1)[1].split()[0])
        print(
            f"rank failure -> all {len(ended)} ranks stopped: {gone_at - failed_at:.2f} s (target <= 10 s); "
            f"run {Run.objects.get(run_id=run.id).status}: {Run.objects.get(run_id=run.id).status_reason}"
        )


if __name__ == "__main__":
    sys.exit(main())
