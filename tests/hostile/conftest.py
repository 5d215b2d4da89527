"""Fixtures of the hostile-input corpus: the registry's SDK workspace and the run fixtures."""

from __future__ import annotations

from tests.registry.conftest import sdk_ws  # noqa: F401  (fixture)
from tests.runs.conftest import cluster, controller, curated_env, node, ws  # noqa: F401  (fixtures)
