"""Docker tests need a Docker engine and TrainHub's local base image: `make test` provides both
(scripts/docker-engine.sh, scripts/docker-base-image.sh). Where no engine can run, they skip and
say why; a missing base image is built here, once."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.processes import BASE_DIR
from trainhub.environments.docker_builder import DEFAULT_BASE_IMAGE, engine_problem


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker SDK client of this machine's engine, with the base image present."""
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"No Docker engine answers on this machine ({problem}); scripts/docker-engine.sh starts one.")
    built = subprocess.run(
        [str(BASE_DIR / "scripts" / "docker-base-image.sh"), DEFAULT_BASE_IMAGE],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert built.returncode == 0, f"The local base image could not be built:\n{built.stdout}{built.stderr}"
    from trainhub.environments.docker_builder import docker_client

    return docker_client()


def run_containers(client, run_id: str) -> list:
    """Every container of the run, running or not."""
    return client.containers.list(all=True, filters={"label": f"trainhub.run={run_id}"})
