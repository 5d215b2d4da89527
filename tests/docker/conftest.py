"""Docker tests need a Docker engine and TrainHub's local base image: `make test` provides both
(scripts/docker-engine.sh, scripts/docker-base-image.sh). Where no engine can run, they skip and
say why; a missing base image is built here, once. Each module brings its own `site` (a TrainHub
with Docker nodes); the helpers below submit to it and read its logs."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from runs.models import LogChunk
from tests.helpers.processes import BASE_DIR
from trainhub.environments.docker_builder import DEFAULT_BASE_IMAGE, engine_problem, image_tag
from trainhub.environments.models import EnvironmentVersion


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker SDK client of this machine's engine, with the base image present."""
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"No Docker engine answers on this machine ({problem}); scripts/docker-engine.sh starts one.")
    built = subprocess.run(
        [str(BASE_DIR / "scripts" / "docker-base-image.sh"), DEFAULT_BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, f"The local base image could not be built:\n{built.stdout}{built.stderr}"
    from trainhub.environments.docker_builder import docker_client

    return docker_client()


def run_containers(client, run_id: str) -> list:
    """Every container of the run, running or not. One removed between Docker's list and its
    inspection is gone, not an error: the tests wait for exactly that removal."""
    return client.containers.list(all=True, filters={"label": f"trainhub.run={run_id}"}, ignore_removed=True)


PROJECTS = Path(__file__).parent / "projects"
TORCH_PACKAGES = ["torch==2.13.0", "numpy"]


@pytest.fixture(scope="module")
def ws(site):
    from trainhub.sdk import Workspace

    return Workspace.get("birds", url=site.url, token=site.token)


def docker_environment(ws, name: str, pip: list[str], dockerfile: str | None = None, **variables: str):
    """A Docker environment of its own spec hash: the engine outlives test sessions, and each
    session's first run must build (the engine's layer cache keeps that quick)."""
    from trainhub.sdk import Environment
    from trainhub.sdk.environment import CondaDependencies

    env = Environment(name)
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=pip)
    env.docker.enabled = True
    if dockerfile is None:
        env.docker.base_image = DEFAULT_BASE_IMAGE
    else:
        env.docker.base_dockerfile = dockerfile
    env.environment_variables = {"TEST_SESSION": uuid.uuid4().hex, **variables}
    return env.register(ws)


def remove_image(site, docker_engine, env) -> None:
    """The engine outlives the session: an environment's image goes with its test module."""
    with site.blocker.unblock():
        version = EnvironmentVersion.objects.get(environment__name=env.name)
    docker_engine.images.remove(image_tag(version.spec_hash))


@pytest.fixture(scope="module")
def torch_env(site, ws, docker_engine):
    env = docker_environment(ws, "docker-torch", TORCH_PACKAGES)
    yield env
    remove_image(site, docker_engine, env)


def submit(ws, env, project: Path, script: str, cluster: str = "docker-cluster", **extra):
    from trainhub.sdk import Experiment, ScriptRunConfig
    from trainhub.sdk.compute import ComputeTarget

    src = ScriptRunConfig(
        source_directory=str(project),
        script=script,
        compute_target=ComputeTarget(workspace=ws, name=cluster),
        environment=env,
        **extra,
    )
    return Experiment(ws, "in-docker").submit(src)


def log_lines(site, run, stream_prefix: str = "") -> list[str]:
    with site.blocker.unblock():
        chunks = LogChunk.objects.filter(run__run_id=run.id, stream__startswith=stream_prefix).order_by("id")
        return [line for chunk in chunks for line in chunk.text.split("\n")]


def site_client():
    from trainhub.environments.docker_builder import docker_client

    return docker_client()
