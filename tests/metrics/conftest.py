"""Fixtures for metrics of real runs: those of tests/runs, and a node reporting to this server."""

from __future__ import annotations

import pytest

from tests.helpers.processes import NodeProcess
from tests.runs.conftest import cluster, curated_env, ws  # noqa: F401  (fixtures used here)


@pytest.fixture
def node(cluster, live_url, tmp_path):  # noqa: F811
    """A node whose runs send their metrics to the test's live server."""
    process = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_url).start()
    yield process
    process.stop()
