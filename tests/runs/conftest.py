"""Fixtures for runs on real nodes: a cluster, a node process, the controller, an SDK workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.processes import ControllerProcess, NodeProcess
from tests.runs.builders import make_cluster

PROJECTS = Path(__file__).parent / "projects"


@pytest.fixture
def cluster(workspace):
    return make_cluster(workspace, name="cpu-cluster", max_nodes=2)


@pytest.fixture
def node(cluster, live_server_process, transactional_db, tmp_path):
    process = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_server_process.url).start()
    yield process
    process.stop()


@pytest.fixture
def controller(transactional_db, tmp_path):
    process = ControllerProcess(tmp_path).start()
    yield process
    process.stop()


@pytest.fixture
def curated_env(workspace, owner):
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=workspace, user=owner)


@pytest.fixture
def ws(live_url, workspace, owner_token, curated_env):
    from trainhub.sdk import Workspace

    return Workspace.get("birds", url=live_url, token=owner_token)


def script_config(ws, project: str, script: str, arguments=(), **extra):
    from trainhub.sdk import Environment, ScriptRunConfig
    from trainhub.sdk.compute import ComputeTarget

    return ScriptRunConfig(
        source_directory=str(PROJECTS / project),
        script=script,
        arguments=list(arguments),
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        **extra,
    )
