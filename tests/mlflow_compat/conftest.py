"""Fixtures for MLflow in real runs: those of tests/runs, and a node reporting to this server."""

from __future__ import annotations

from tests.metrics.conftest import node  # noqa: F401  (fixtures used here)
from tests.runs.conftest import cluster, curated_env, ws  # noqa: F401
