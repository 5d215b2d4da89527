"""Fault fixtures: the run fixtures (cluster, one or two nodes, controller, curated environment, SDK workspace)."""

from __future__ import annotations

from tests.runs.conftest import cluster, controller, curated_env, node, ws  # noqa: F401  (fixtures)
from tests.runs.test_distributed import two_nodes  # noqa: F401  (fixture)
