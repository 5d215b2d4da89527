"""What a script imports of the SDK inside a run imports with the standard library alone: a run's
interpreter has the in-run SDK folder (builders.sdk_path) and none of TrainHub's dependencies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainhub.environments.builders import sdk_path

# Training scripts take their run (Run.get_context()); scoring scripts find their model (Model) and
# run in the scoring server.
IN_RUN_MODULES = ["trainhub.sdk", "trainhub.sdk.run", "trainhub.sdk.model", "trainhub.sdk._scoring_server"]


@pytest.mark.parametrize("module", IN_RUN_MODULES)
def test_it_imports_with_the_standard_library_only(module, tmp_path):
    folder = sdk_path(tmp_path)
    code = f"import sys; sys.path.insert(0, {str(folder)!r}); import {module}; from trainhub.sdk import Run, Model"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
