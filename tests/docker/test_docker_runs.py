"""Runs in Docker environments on real nodes with a real Docker engine: the image built from the
environment (its log in the run's log, recorded for the environment page) and reused by the next
run, a run's logs, outputs and model from a container, a 2-node x 2-process gloo DDP run in
containers, cancel leaving no container, a failed build surfaced with its log, nodes without
an engine never given a Docker run, and a rank's container unprivileged and apart from the node."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runs.models import Run
from tests.docker.conftest import (
    PROJECTS,
    docker_environment,
    log_lines,
    run_containers,
    site_client,
    submit,
)
from tests.helpers.processes import NodeProcess, wait_until
from tests.helpers.site import module_site
from tests.runs.conftest import PROJECTS as RUN_PROJECTS
from trainhub.environments.docker_builder import DEFAULT_BASE_IMAGE, ENV_ROOT
from trainhub.environments.models import EnvironmentVersion
from trainhub.sandbox import box_uid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(docker_engine, django_db_setup, django_db_blocker, live_server_process, tmp_path_factory):
    """A workspace with a Docker cluster of two nodes and a cluster whose node has no engine."""
    from tests.runs.builders import make_cluster

    log_dir = tmp_path_factory.mktemp("docker-site")
    with module_site(django_db_blocker, live_server_process, log_dir) as site:
        with django_db_blocker.unblock():
            make_cluster(site.workspace, name="docker-cluster", max_nodes=2)
            plain = make_cluster(site.workspace, name="plain-cluster", max_nodes=1)
            site.nodes.append(
                NodeProcess(plain, log_dir, TRAINHUB_NODE_SERVER_URL=site.url, TRAINHUB_NODE_DOCKER="false").start()
            )
        site.start_nodes("docker-cluster", 2)
        yield site


def builds_of(site, env) -> list:
    from trainhub.environments.models import EnvironmentBuild

    with site.blocker.unblock():
        version = EnvironmentVersion.objects.get(environment__name=env.name)
        return list(EnvironmentBuild.objects.filter(spec_hash=version.spec_hash))


def test_a_gpu_node_hands_its_gpus_to_the_containers_with_nccl(db, tmp_path):
    """No GPU here: what the launcher would ask the engine for on a node with two is inspected."""
    from runs.containers import SPEC_VARIABLE, launch_problem, launcher_for, site_label
    from tests.conftest import make_user
    from tests.runs.builders import make_cluster, make_snapshot
    from trainhub.compute.models import Node
    from trainhub.environments.builders import MaterialisedEnvironment
    from trainhub.workspaces.services import workspace_create

    workspace = workspace_create(name="gpus", user=make_user("gina"), description="")
    cluster = make_cluster(workspace, name="gpu-cluster", vm_size="STANDARD_NC12")
    node = Node.objects.create(
        cluster=cluster, name="gpu-node", hostname="h", address="10.0.0.2", pid=1, cpus=12, gpus=2, docker=True
    )
    run = Run.objects.create(
        workspace=workspace,
        experiment=workspace.experiments.create(name="e"),
        number=1,
        run_id="e_1",
        cluster=cluster,
        snapshot=make_snapshot(workspace),
        environment_name="gpu-env",
        environment_spec={"docker": {"enabled": True}},
        script="train.py",
        distributed={"type": "pytorch", "communication_backend": "Nccl"},
    )
    image = "trainhub-env:" + "0" * 64
    built = MaterialisedEnvironment(Path(ENV_ROOT) / "bin" / "python", Path(ENV_ROOT), "0" * 64, True, image)
    launcher = launcher_for(run, node, tmp_path / "work", built)
    argv, env = launcher.command(
        [f"{ENV_ROOT}/bin/python", "train.py"], {"TRAINHUB_DIST_BACKEND": "nccl", "TRAINHUB_RANK": "1"}
    )
    spec = json.loads(env[SPEC_VARIABLE])
    host_config = spec["HostConfig"]
    assert host_config["DeviceRequests"] == [{"Driver": "nvidia", "Count": 2, "Capabilities": [["gpu"]]}]
    assert "TRAINHUB_DIST_BACKEND=nccl" in spec["Env"]
    assert spec["Image"] == image and host_config["NetworkMode"] == "host"
    assert spec["Cmd"] == [f"{ENV_ROOT}/bin/python", "train.py"]
    assert spec["Labels"] == {
        "trainhub.run": "e_1",
        "trainhub.node": "gpu-node",
        "trainhub.site": site_label(),
        "trainhub.rank": "1",  # how the node finds the container whose use it samples as rank 1's
    }
    assert f"{tmp_path / 'work'}:{tmp_path / 'work'}:rw" in host_config["Binds"]
    node.gpus = 0
    argv, env = launcher_for(run, node, tmp_path / "work", built).command(["python"], {})
    assert "DeviceRequests" not in json.loads(env[SPEC_VARIABLE])["HostConfig"]
    assert launch_problem(run, node) == ""


def test_a_run_in_a_docker_environment_logs_outputs_and_registers_its_model(site, ws, torch_env, tmp_path):
    run = submit(ws, torch_env, PROJECTS, "train.py")
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    prepare = log_lines(site, run, "prepare_")
    assert any(line.startswith("Step 1/") and DEFAULT_BASE_IMAGE in line for line in prepare), prepare
    assert any("Successfully tagged trainhub-env:" in line for line in prepare)
    assert any(line.startswith("Environment built") for line in prepare)
    ranks = log_lines(site, run, "std_log_process_0")
    assert f"in container True python {ENV_ROOT}/bin/python" in ranks
    assert [line.split()[1] for line in ranks if line.startswith("epoch ")] == ["0", "1", "2"]
    printed = next(line for line in ranks if line.startswith("model sha256")).split()[-1]
    run.download_file("outputs/model.pt", str(tmp_path / "model.pt"))

    assert hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest() == printed
    model = run.register_model("docker-linear", "outputs/model.pt")
    assert model.version == 1
    (build,) = builds_of(site, torch_env)
    assert build.status == "succeeded" and "Successfully tagged" in build.log
    assert run_containers(site_client(), run.id) == []


def test_the_next_run_reuses_the_image_without_building(site, ws, torch_env):
    from django.conf import settings

    from trainhub.environments.docker_builder import materialise_image

    with site.blocker.unblock():
        version = EnvironmentVersion.objects.get(environment__name=torch_env.name)
        builds_before = len(builds_of(site, torch_env))
    materialise_image(version.spec, cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR), log=lambda _line: None)
    run = submit(ws, torch_env, PROJECTS, "train.py")
    assert run.wait_for_completion()["status"] == "Completed"
    prepare = log_lines(site, run, "prepare_")
    assert any(line.startswith("Environment cache hit") for line in prepare), prepare
    assert any("is in this node's Docker engine" in line for line in prepare)
    assert not any(line.startswith("Step ") for line in prepare)
    assert len(builds_of(site, torch_env)) == builds_before


def test_two_nodes_by_two_processes_of_gloo_ddp_in_containers(site, ws, torch_env, tmp_path):
    from trainhub.sdk.runconfig import PyTorchConfiguration

    run = submit(
        ws,
        torch_env,
        RUN_PROJECTS / "ddp",
        "ddp_check.py",
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2),
    )
    assert run.wait_for_completion()["status"] == "Completed"
    reduced = [line for line in log_lines(site, run, "std_log_process_") if "all_reduce sum" in line]
    assert reduced == ["all_reduce sum 10.0 expected 10.0"] * 4
    run.download_file("outputs/result.json", str(tmp_path / "result.json"))
    assert json.loads((tmp_path / "result.json").read_text()) == {"world_size": 4, "sum": 10.0}
    assert run_containers(site_client(), run.id) == []


def test_the_ranks_of_a_docker_launch_find_the_rendezvous_store_up(site, ws, torch_env):
    """As in a per-process launch on the node's own Python: node 0 listens on the master port
    before any rank's container starts and hands the socket to the store, a container of the run's
    image as the run's user, so a rank knocking before it imports torch is let in at once."""
    from runs.launch_plan import STORE_READY, STORE_STREAM
    from trainhub.sdk.runconfig import PyTorchConfiguration

    config = PyTorchConfiguration(process_count=2, node_count=1)
    run = submit(ws, torch_env, RUN_PROJECTS / "ddp", "knock_first.py", distributed_job_config=config)
    assert run.wait_for_completion()["status"] == "Completed"
    for rank in range(2):
        own = log_lines(site, run, f"std_log_process_{rank}")
        assert "the rendezvous port answered" in own and "all_reduce sum 3.0" in own, own
    [ready] = [line for line in log_lines(site, run, STORE_STREAM) if line.startswith(STORE_READY)]
    with site.blocker.unblock():
        run_uid = box_uid("run", Run.objects.get(run_id=run.id).pk)
    assert ready.endswith(f" as uid {run_uid}"), ready
    assert run_containers(site_client(), run.id) == []


def test_cancel_stops_and_removes_the_runs_containers(site, ws, torch_env):
    run = submit(ws, torch_env, PROJECTS, "wait.py")
    wait_until(
        lambda: "waiting to be canceled" in log_lines(site, run, "std_log_process_0"),
        120,
        message="the script to start in its container",
    )
    client = site_client()
    (container,) = run_containers(client, run.id)
    assert container.status == "running"
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 30, message="Canceled")
    wait_until(lambda: run_containers(client, run.id) == [], 10, message="no container of the run")


def test_a_failed_build_fails_the_run_with_the_build_log(site, ws):
    env = docker_environment(ws, "docker-broken", ["trainhub-no-such-package==9.9.9"])
    run = submit(ws, env, PROJECTS, "train.py")
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    with site.blocker.unblock():
        reason = Run.objects.get(run_id=run.id).status_reason
    assert reason.startswith("Environment build failed: The image build failed:")
    assert "trainhub-no-such-package" in reason
    prepare = "\n".join(log_lines(site, run, "prepare_"))
    assert "Step 1/" in prepare and "trainhub-no-such-package" in prepare
    (build,) = builds_of(site, env)
    assert build.status == "failed" and "trainhub-no-such-package" in build.log


def test_a_docker_run_for_a_cluster_without_an_engine_is_refused_at_submit(site, ws, torch_env):
    from trainhub.sdk.exceptions import UserErrorException

    with site.blocker.unblock():
        runs_before = Run.objects.count()
    with pytest.raises(UserErrorException) as refused:
        submit(ws, torch_env, PROJECTS, "train.py", cluster="plain-cluster")
    assert (
        "Environment 'docker-torch' is a Docker environment (docker.enabled = True), but none of compute target "
        "'plain-cluster''s nodes has a Docker engine: the run cannot start." in str(refused.value)
    )
    with site.blocker.unblock():
        assert Run.objects.count() == runs_before


def test_nodes_without_an_engine_are_never_sent_a_docker_run(site, ws, torch_env):
    """The plain cluster gains a Docker node that is not up: the run is accepted, and waits."""
    from runs.containers import launch_problem
    from runs.scheduling import dispatch_cluster
    from trainhub.compute.models import Node

    with site.blocker.unblock():
        plain = Node.objects.get(cluster__name="plain-cluster", state="idle")
        assert not plain.docker
        Node.objects.create(
            cluster=plain.cluster, name="docker-but-down", hostname="h", address="127.0.0.1", pid=1, cpus=1, docker=True
        )
    run = submit(ws, torch_env, PROJECTS, "train.py", cluster="plain-cluster")
    with site.blocker.unblock():
        assert dispatch_cluster(plain.cluster_id) == []
        recorded = Run.objects.get(run_id=run.id)
        assert recorded.status == "Queued" and recorded.dispatched_at is None
        assert Node.objects.get(pk=plain.pk).state == "idle"
        # What the node would answer, were it sent one anyway.
        assert launch_problem(recorded, plain) == (
            f"Environment 'docker-torch' is a Docker environment (docker.enabled = True), but node {plain.name} "
            "has no Docker engine. Run it on a cluster whose nodes have one, or set docker.enabled = False."
        )
        Node.objects.filter(name="docker-but-down").update(state="stopped")
    run.cancel()
    wait_until(lambda: run.get_status() == "Canceled", 30, message="Canceled")


def test_a_killed_node_leaves_no_container_running(site, ws, torch_env):
    from tests.runs.builders import make_cluster

    with site.blocker.unblock():
        solo = make_cluster(site.workspace, name="docker-solo", max_nodes=1)
        node = NodeProcess(solo, site.log_dir, TRAINHUB_NODE_SERVER_URL=site.url).start()
    site.nodes.append(node)
    run = submit(ws, torch_env, PROJECTS, "wait.py", cluster="docker-solo")
    wait_until(
        lambda: "waiting to be canceled" in log_lines(site, run, "std_log_process_0"),
        120,
        message="the script to start in its container",
    )
    client = site_client()
    assert [c.status for c in run_containers(client, run.id)] == ["running"]
    node.kill()
    wait_until(lambda: run_containers(client, run.id) == [], 20, message="no container of the killed node's run")


CONTAINMENT_PROBE = """
import os, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print("uid", os.getuid(), flush=True)
print("ipc", os.readlink("/proc/self/ns/ipc"), flush=True)
print("CapEff", status["CapEff"].strip(), "NoNewPrivs", status["NoNewPrivs"].strip(), flush=True)
print("data cache", "visible" if os.path.exists(sys.argv[1]) else "absent", flush=True)
with open("outputs/written.txt", "w") as handle:
    handle.write("written by the container")
"""


def test_a_ranks_container_is_unprivileged_has_its_own_ipc_and_sees_only_its_run(site, ws, torch_env, tmp_path):
    """Suspected in issue 16: rank containers had the host's IPC namespace and the node's whole data
    cache (every workspace's staged inputs) mounted read-write. A rank's container runs as a non-root
    user with no capability and no new privileges, in an IPC namespace of its own; the node's data
    cache is not in it; it still writes its outputs."""
    from django.conf import settings

    (tmp_path / "probe.py").write_text(CONTAINMENT_PROBE)
    run = submit(ws, torch_env, tmp_path, "probe.py", arguments=[str(settings.TRAINHUB_DATA_CACHE_DIR)])
    details = run.wait_for_completion(raise_on_error=False)
    lines = log_lines(site, run, "std_log_process_0")
    assert details["status"] == "Completed", lines
    uid = int(next(line for line in lines if line.startswith("uid ")).split()[1])
    assert uid != 0
    assert f"ipc {os.readlink('/proc/self/ns/ipc')}" not in lines
    assert "CapEff 0000000000000000 NoNewPrivs 1" in lines
    assert "data cache absent" in lines
    run.download_file("outputs/written.txt", str(tmp_path / "written.txt"))
    assert (tmp_path / "written.txt").read_text() == "written by the container"
