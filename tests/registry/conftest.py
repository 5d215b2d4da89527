"""Registry fixtures: the run fixtures (cluster, node, curated environment) and an SDK workspace."""

from __future__ import annotations

import pytest

from tests.helpers.processes import NodeProcess
from tests.runs.conftest import cluster, controller, curated_env, ws  # noqa: F401  (fixtures)


@pytest.fixture
def node(cluster, live_url, tmp_path):  # noqa: F811
    """A node whose runs reach the live test server (in-run registration, ONNX export jobs)."""
    process = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_url).start()
    yield process
    process.stop()


@pytest.fixture
def sdk_ws(live_url, workspace, owner_token):
    """The owner's SDK workspace on the live server, without the run fixtures' environments."""
    from trainhub.sdk import Workspace

    return Workspace.get("birds", url=live_url, token=owner_token)
