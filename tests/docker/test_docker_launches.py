"""Launches in Docker environments beyond one process per rank: MPI across two nodes (mpirun and
Open MPI's daemons in the run's box, every rank in a container), its cancel, the run's variables
reaching the container even where the node has the same value, and whole lines from the local
ranks of a per-node torchrun launch inside a container."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrics.models import MetricSeries
from runs.container_agent import SOCKET_VARIABLE
from runs.container_relay import SOCKET_NAME
from runs.containers import CONTAINER_AGENT_ARGV, launch_problem, launcher_for
from runs.models import Run
from runs.system_metrics import MEMORY
from tests.docker.conftest import (
    PROJECTS,
    docker_environment,
    log_lines,
    remove_image,
    run_containers,
    site_client,
    submit,
)
from tests.helpers.processes import NodeProcess, wait_until
from tests.helpers.site import module_site
from tests.runs.conftest import PROJECTS as RUN_PROJECTS
from tests.runs.test_distributed import assert_mpi_ranks_ran_on_their_nodes
from trainhub.compute.models import Node
from trainhub.environments.builders import MaterialisedEnvironment
from trainhub.environments.docker_builder import DEFAULT_BASE_IMAGE, ENV_ROOT
from trainhub.sandbox import box_uid

pytestmark = pytest.mark.slow

# What the nodes inherit from whoever started them: one name the run sets too, to the same value.
SHARED_SETTING = "same-on-node-and-in-run"
NODE_ONLY = "the-nodes-own"
# Open MPI's library, as an MPI base image carries it (mpi4py's wheel loads it at run time).
MPI_DOCKERFILE = (
    f"FROM {DEFAULT_BASE_IMAGE}\n"
    "RUN apt-get update -q && apt-get install -y -q --no-install-recommends libopenmpi3 && rm -rf /var/lib/apt/lists/*"
)


@pytest.fixture(scope="module")
def site(docker_engine, django_db_setup, django_db_blocker, live_server_process, tmp_path_factory):
    """A workspace with a Docker cluster of two nodes started with variables of their own."""
    from tests.runs.builders import make_cluster

    log_dir = tmp_path_factory.mktemp("docker-launches")
    with module_site(django_db_blocker, live_server_process, log_dir) as site:
        with django_db_blocker.unblock():
            cluster = make_cluster(site.workspace, name="docker-cluster", max_nodes=2)
            for _ in range(2):
                site.nodes.append(
                    NodeProcess(
                        cluster,
                        log_dir,
                        TRAINHUB_NODE_SERVER_URL=site.url,
                        SHARED_SETTING=SHARED_SETTING,
                        NODE_ONLY=NODE_ONLY,
                        TRAINHUB_SYSTEM_METRICS_SECONDS="1",
                    ).start()
                )
        yield site


@pytest.fixture(scope="module")
def mpi_env(site, ws, docker_engine):
    env = docker_environment(ws, "docker-mpi", ["mpi4py"], MPI_DOCKERFILE, SHARED_SETTING=SHARED_SETTING)
    yield env
    remove_image(site, docker_engine, env)


def mpi_config():
    from trainhub.sdk.runconfig import MpiConfiguration

    return MpiConfiguration(node_count=2, process_count_per_node=2)


def docker_mpi_run() -> tuple[Run, Node]:
    """A Docker MPI run (2 nodes x 2 processes) in a workspace of its own, and a Docker node."""
    from tests.conftest import make_user
    from tests.runs.builders import make_cluster, make_snapshot
    from trainhub.workspaces.services import workspace_create

    workspace = workspace_create(name="mpi", user=make_user("mia"), description="")
    cluster = make_cluster(workspace, name="mpi-cluster")
    node = Node.objects.create(
        cluster=cluster, name="mpi-node", hostname="h", address="127.0.0.1", pid=1, cpus=2, docker=True
    )
    run = Run.objects.create(
        workspace=workspace,
        experiment=workspace.experiments.create(name="e"),
        number=1,
        run_id="e_1",
        cluster=cluster,
        snapshot=make_snapshot(workspace),
        environment_name="mpi-env",
        environment_spec={"docker": {"enabled": True}},
        script="train.py",
        distributed={"type": "mpi", "node_count": 2, "process_count_per_node": 2},
    )
    return run, node


IMAGE_PYTHON = Path(ENV_ROOT) / "bin" / "python"
BUILT = MaterialisedEnvironment(IMAGE_PYTHON, Path(ENV_ROOT), "0" * 64, True, "img")


def test_an_mpi_runs_ranks_are_the_container_agent_and_the_node_keeps_the_spec(db, tmp_path):
    """What a Docker node hands mpirun (or Open MPI's daemon) for its ranks: the container agent and
    the relay's socket, nothing of the container; the spec its relay serves has the run's variables
    and the run's uid. Also the first test of the module to ask for `db`, so that the test database
    exists for the site."""
    run, node = docker_mpi_run()
    assert launch_problem(run, node) == ""
    launcher = launcher_for(run, node, tmp_path / "work", BUILT)
    env = {"SHARED_SETTING": SHARED_SETTING, "NODE_ONLY": NODE_ONLY, "NODE_RANK": "1", "PATH": "/node/bin"}
    node_variables = frozenset({"SHARED_SETTING", "NODE_ONLY", "PATH"})
    app, variables = launcher.mpi_app(["python", "train.py"], env, node_variables)
    assert app == list(CONTAINER_AGENT_ARGV)
    assert variables == {SOCKET_VARIABLE: str(tmp_path / "work" / SOCKET_NAME)}
    spec = launcher.spec(["python", "train.py"], env, node_variables)
    assert spec["Cmd"] == ["python", "train.py"] and spec["HostConfig"]["NetworkMode"] == "host"
    assert sorted(spec["Env"]) == ["HOME=/tmp", "NODE_RANK=1"]
    assert spec["User"] == f"{box_uid('run', run.pk)}:{box_uid('run', run.pk)}"
    spec = launcher.spec(["python", "train.py"], env, frozenset({"NODE_ONLY", "PATH"}))
    assert f"SHARED_SETTING={SHARED_SETTING}" in spec["Env"]


def test_a_node_without_its_box_fails_a_docker_mpi_run_saying_why(db, settings, tmp_path):
    """TRAINHUB_NODE_SANDBOX=false: mpirun and Open MPI's daemons of a Docker run have no box to run
    in (and would run as the node's user, outside it): the run fails with the reason."""
    from runs.execution import NodeExecution
    from runs.executor import SetupFailed
    from runs.preparation import DOCKER_MPI_NEEDS_BOX

    settings.TRAINHUB_NODE_SANDBOX = "false"
    settings.TRAINHUB_NODE_WORK_DIR = str(tmp_path / "node-work")
    run, node = docker_mpi_run()
    execution = NodeExecution(run.pk, node, 0)
    execution.workdir.mkdir(parents=True)
    execution.launcher = launcher_for(run, node, execution.workdir, BUILT)
    with pytest.raises(SetupFailed) as failed:
        execution.sandbox_processes(IMAGE_PYTHON, [])
    assert failed.value.reason == DOCKER_MPI_NEEDS_BOX
    assert execution.box is None


def test_mpi_runs_two_nodes_by_two_processes_in_containers(site, ws, mpi_env):
    run = submit(ws, mpi_env, RUN_PROJECTS / "ddp", "mpi_allreduce.py", distributed_job_config=mpi_config())
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed", "\n".join(log_lines(site, run)[-80:])
    lines = []
    for rank in range(4):
        said = [line for line in log_lines(site, run, f"std_log_process_{rank}") if "mpi rank" in line]
        assert len(said) == 1 and said[0].startswith(f"mpi rank {rank}/4 "), said
        assert said[0].endswith(" container=True"), said
        lines += said
    with site.blocker.unblock():
        assert_mpi_ranks_ran_on_their_nodes(run, lines)
    assert run_containers(site_client(), run.id) == []


def test_cancel_of_an_mpi_run_leaves_no_container(site, ws, mpi_env):
    run = submit(ws, mpi_env, PROJECTS, "mpi_wait.py", distributed_job_config=mpi_config())
    wait_until(
        lambda: sum("waiting to be canceled" in line for line in log_lines(site, run, "std_log_process_")) == 4,
        180,
        message="the four ranks to start in their containers",
    )
    client = site_client()
    assert [c.status for c in run_containers(client, run.id)] == ["running"] * 4
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 30, message="Canceled")
    wait_until(lambda: run_containers(client, run.id) == [], 10, message="no container of the run")


def test_the_runs_variables_reach_the_container_even_with_the_nodes_value(site, ws, mpi_env):
    run = submit(ws, mpi_env, PROJECTS, "variables.py")
    assert run.wait_for_completion()["status"] == "Completed"
    said = dict(line.split("=", 1) for line in log_lines(site, run, "std_log_process_0") if "=" in line)
    assert said["SHARED_SETTING"] == SHARED_SETTING
    assert said["NODE_ONLY"] == "None"
    assert said["RANK"] == "0" and said["MASTER_PORT"].isdigit()


def test_two_local_ranks_of_torchrun_in_a_container_never_split_or_merge_lines(site, ws, torch_env):
    from trainhub.sdk import Experiment, ScriptRunConfig
    from trainhub.sdk.compute import ComputeTarget
    from trainhub.sdk.runconfig import PyTorchConfiguration

    src = ScriptRunConfig(
        source_directory=str(PROJECTS),
        command="torchrun --nproc_per_node 2 --nnodes 1 --master_port ${MASTER_PORT} whole_lines.py".split(),
        compute_target=ComputeTarget(workspace=ws, name="docker-cluster"),
        environment=torch_env,
        distributed_job_config=PyTorchConfiguration(node_count=1),
    )
    run = Experiment(ws, "in-docker").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    logged = log_lines(site, run)
    # Each rank's lines reach its own log (tagged by the sitecustomize, see trainhub/sdk/_whole_lines.py).
    own = {rank: log_lines(site, run, f"std_log_process_{rank}") for rank in (0, 1)}
    assert all(line.startswith(f"rank {rank} ") for rank in (0, 1) for line in own[rank]), logged[-40:]
    printed = own[0] + own[1]
    assert printed, logged[-40:]
    expected = {f"rank {rank} line {index} " + "x" * (index % 50) for rank in (0, 1) for index in range(2000)}
    broken = [line for line in printed if line not in expected]
    assert broken == [], broken[:5]
    assert len(printed) == len(expected) and set(printed) == expected
    assert run_containers(site_client(), run.id) == []
    # Each rank's own memory, found in its container through the engine and the pid it announced.
    with site.blocker.unblock():
        sampled = MetricSeries.objects.filter(run__run_id=run.id, name=MEMORY, min_value__gt=0)
        assert sorted(sampled.values_list("rank", flat=True)) == [0, 1]
