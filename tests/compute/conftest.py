"""Runs fixtures (node, controller, SDK workspace) for compute tests too."""

from tests.runs.conftest import cluster, controller, curated_env, node, ws  # noqa: F401
