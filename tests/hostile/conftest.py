"""Fixtures of the hostile-input corpus: the registry's SDK workspace, the run fixtures, and `world`
(one object of every kind in `birds`, from test_identity)."""

from __future__ import annotations

from tests.hostile.test_identity import world  # noqa: F401  (fixture)
from tests.registry.conftest import sdk_ws  # noqa: F401  (fixture)
from tests.runs.conftest import cluster, controller, curated_env, node, ws  # noqa: F401  (fixtures)
from tests.runs.test_distributed import two_nodes  # noqa: F401  (fixture)
