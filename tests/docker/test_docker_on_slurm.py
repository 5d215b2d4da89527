"""Docker environments on a Slurm partition (the test Slurm of tests/helpers/slurm.py, hosts n1 and
n2, with this machine's Docker engine): each allocated host's task builds or reuses the
environment's image and runs its ranks in containers, in the same containment as on local nodes;
a host without an engine fails the run, saying so and naming the host."""

from __future__ import annotations

import os

import pytest

from runs.models import Run, RunNode, RunProcess
from tests.docker.conftest import docker_environment, log_lines, remove_image, run_containers, site_client, submit
from tests.helpers.processes import ControllerProcess
from tests.helpers.site import module_site
from tests.runs.builders import make_cluster, make_run
from trainhub.sandbox import box_uid

pytestmark = pytest.mark.slow

# Each rank says where and as whom it runs, what it holds and sees, and writes an output.
PROBE = """
import os, sys
rank = os.environ["RANK"]
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(f"rank {rank} node {os.environ['NODE_RANK']} container {os.path.exists('/.dockerenv')} uid {os.getuid()}")
print(f"rank {rank} CapEff", status["CapEff"].strip(), "NoNewPrivs", status["NoNewPrivs"].strip())
print(f"rank {rank} ipc", os.readlink("/proc/self/ns/ipc"))
print(f"rank {rank} data cache", "visible" if os.path.exists(sys.argv[1]) else "absent", flush=True)
with open(f"outputs/rank_{rank}.txt", "w") as handle:
    handle.write(f"written by rank {rank}")
"""
MISSING_ENGINE = "unix:///nonexistent/docker.sock"


def test_a_slurm_host_says_why_it_cannot_run_a_docker_environment(workspace, settings, monkeypatch):
    """What a host's task answers, engine or not, for a Docker run and another. Also the module's
    first test to ask for `db`, so that the test database exists for the site."""
    from runs.slurm_execution import host_docker

    cluster = make_cluster(workspace, name="hpc", provisioner="slurm", slurm_partition="debug")
    docker_run = make_run(
        workspace, cluster, environment_name="slurm-docker", environment_spec={"docker": {"enabled": True}}
    )
    plain_run = make_run(workspace, cluster)
    monkeypatch.setenv("DOCKER_HOST", MISSING_ENGINE)
    settings.TRAINHUB_NODE_DOCKER = "auto"
    docker, problem = host_docker(docker_run, "n7")
    assert not docker
    assert problem.startswith(
        "Environment 'slurm-docker' is a Docker environment (docker.enabled = True), but Slurm host n7 has no "
        "Docker engine TrainHub may use (no Docker engine (FileNotFoundError: "
    )
    assert problem.endswith(
        "Start one on the hosts of partition debug, usable by the account the jobs run as, "
        "or set docker.enabled = False."
    )
    settings.TRAINHUB_NODE_DOCKER = "true"
    assert "(TRAINHUB_NODE_DOCKER is 'true' but no Docker engine answers: " in host_docker(docker_run, "n7")[1]
    assert host_docker(plain_run, "n7") == (False, "")
    settings.TRAINHUB_NODE_DOCKER = "false"
    assert (
        "Slurm host n7 has no Docker engine TrainHub may use (Docker environments off)"
        in host_docker(docker_run, "n7")[1]
    )
    monkeypatch.delenv("DOCKER_HOST")
    settings.TRAINHUB_NODE_DOCKER = "auto"
    assert host_docker(docker_run, "n7") == (True, "")


@pytest.fixture(scope="module")
def site(docker_engine, slurm_cluster, django_db_setup, django_db_blocker, live_server_process, tmp_path_factory):
    """A workspace whose compute target `hpc` is the test Slurm's partition."""
    from trainhub.sdk import Workspace
    from trainhub.sdk.compute import ComputeTarget, SlurmCompute

    folder = tmp_path_factory.mktemp("docker-slurm")
    controller = ControllerProcess(folder).start()
    try:
        with module_site(django_db_blocker, live_server_process, folder) as site:
            ws = Workspace.get("birds", url=site.url, token=site.token)
            ComputeTarget.attach(ws, "hpc", SlurmCompute.attach_configuration(partition="debug"))
            yield site
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def probe_env(site, ws, docker_engine):
    """The base image and no package: the probe needs the standard library only."""
    env = docker_environment(ws, "slurm-docker", [])
    yield env
    remove_image(site, docker_engine, env)


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


def test_each_hosts_ranks_run_in_containers_as_on_local_nodes(site, ws, probe_env, probe, tmp_path):
    from django.conf import settings

    from trainhub.sdk.runconfig import PyTorchConfiguration

    run = submit(
        ws,
        probe_env,
        probe,
        "probe.py",
        cluster="hpc",
        arguments=[str(settings.TRAINHUB_DATA_CACHE_DIR)],
        distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2),
    )
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", log_lines(site, run)[-60:]
    with site.blocker.unblock():
        recorded = Run.objects.get(run_id=run.id)
        nodes = dict(RunProcess.objects.filter(run=recorded).values_list("rank", "node_name"))
    assert nodes == {0: f"slurm-{recorded.cluster_id}-n1", 1: f"slurm-{recorded.cluster_id}-n2"}
    uid = box_uid("run", recorded.pk)
    for rank in (0, 1):
        lines = log_lines(site, run, f"std_log_process_{rank}")
        assert f"rank {rank} node {rank} container True uid {uid}" in lines, lines
        assert f"rank {rank} CapEff 0000000000000000 NoNewPrivs 1" in lines
        assert f"rank {rank} ipc {os.readlink('/proc/self/ns/ipc')}" not in lines
        assert f"rank {rank} data cache absent" in lines
        # Each host materialised the environment as an image of its engine (built, or found there).
        prepare = log_lines(site, run, f"prepare_node_{rank}")
        assert any(line.startswith(("Environment built", "Environment cache hit")) for line in prepare), prepare
        run.download_file(f"outputs/rank_{rank}.txt", str(tmp_path / f"rank_{rank}.txt"))
        assert (tmp_path / f"rank_{rank}.txt").read_text() == f"written by rank {rank}"
    assert run_containers(site_client(), run.id) == []


def test_a_host_without_a_docker_engine_fails_the_run_naming_it(site, ws, slurm_cluster, probe_env, probe):
    with slurm_cluster.node_settings(DOCKER_HOST=MISSING_ENGINE):
        run = submit(ws, probe_env, probe, "probe.py", cluster="hpc", arguments=["/"])
        details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    with site.blocker.unblock():
        (host,) = RunNode.objects.filter(run__run_id=run.id).values_list("node__name", flat=True)
        assert not RunProcess.objects.filter(run__run_id=run.id).exists()
    host = host.rsplit("-", 1)[1]
    assert details["status_reason"].startswith(
        "Environment 'slurm-docker' is a Docker environment (docker.enabled = True), but Slurm host "
        f"{host} has no Docker engine TrainHub may use (no Docker engine (FileNotFoundError: "
    ), details["status_reason"]
    assert run_containers(site_client(), run.id) == []
