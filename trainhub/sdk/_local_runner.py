"""compute_target="local": the run executes on this machine, in TrainHub's box, tracked in the
workspace. The SDK only starts the runner of TrainHub's node package (`python -m runs.local_runner`,
a subprocess: the SDK imports nothing of the server) and hands it the run; where this Python has no
node package, or the machine cannot make the box, submitting says so before anything is recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainhub.sdk.exceptions import UserErrorException

RUNNER_MODULE = "runs.local_runner"
# Printed by the runner once it has taken its run (runs/local_runner.py, CLAIMED).
CLAIMED = "TrainHub local runner: the run is taken"
NEEDS_NODE_PACKAGE = (
    "compute_target='local' runs the script on this machine, in TrainHub's box, which needs TrainHub's "
    "node package here, not only the SDK ({python} cannot import {module}): clone the TrainHub "
    "repository at the server's version, run `make install` in it (it also installs bubblewrap, "
    "the box), and run this notebook or script with its .venv/bin/python. Or submit to a compute cluster. "
    "({missing})"
)
CANNOT_RUN_HERE = "compute_target='local' cannot run on this machine: {problem}"
RUNNER_REFUSED = "The local runner could not take run {run_id}: {problem}"
CHECK_SECONDS = 120
NO_INTERPRETER = (
    "python.interpreter_path {path!r} is no Python interpreter on this machine: a user-managed environment "
    "(python.user_managed_dependencies = True) runs the script with that Python as it is. Give the full "
    "path of an executable (e.g. a virtualenv's bin/python), or leave it unset for this Python ({python})."
)


def submitter_python(environment: Any) -> str | None:
    """The interpreter a user-managed environment runs with on this machine (python.interpreter_path,
    else the Python that submits, as the cloud SDK does), or None for an environment built from its
    packages. Chosen here, by the submitter's own code: the server never names it."""
    if environment is None or not environment.python.user_managed_dependencies:
        return None
    given = environment.python.interpreter_path
    if not given:
        return sys.executable
    found = shutil.which(os.path.expanduser(given))
    if found is None:
        raise UserErrorException(NO_INTERPRETER.format(path=given, python=sys.executable))
    return os.path.abspath(found)


def check_machine() -> None:
    """Raises UserErrorException saying what to install where this machine cannot run a local run."""
    try:
        checked = subprocess.run(
            [sys.executable, "-m", RUNNER_MODULE, "--check"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CHECK_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise UserErrorException(CANNOT_RUN_HERE.format(problem="the runner's check did not answer")) from None
    if checked.returncode == 0:
        return
    if "No module named" in checked.stderr:
        missing = checked.stderr.strip().splitlines()[-1]
        raise UserErrorException(
            NEEDS_NODE_PACKAGE.format(python=sys.executable, module=RUNNER_MODULE, missing=missing)
        )
    problem = checked.stdout.strip() or checked.stderr.strip()[-2000:]
    raise UserErrorException(CANNOT_RUN_HERE.format(problem=problem))


def start_runner(workspace: Any, run_id: str, snapshot: Path, python: str | None = None) -> None:
    """Start the run's runner, which takes `snapshot` (and removes it); returns once it has taken the
    run, and leaves it running on its own (the run goes on when this process ends). `python`: a
    user-managed environment's interpreter (submitter_python)."""
    chosen = ["--python", python] if python else []
    runner = subprocess.Popen(
        [sys.executable, "-m", RUNNER_MODULE, run_id, "--snapshot", str(snapshot), *chosen],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert runner.stdin is not None and runner.stdout is not None
    credentials = {"server_url": workspace.url, "workspace": workspace.name, "token": workspace._token}
    runner.stdin.write(json.dumps(credentials) + "\n")
    runner.stdin.close()
    first = runner.stdout.readline().strip()
    if first == CLAIMED:
        runner.stdout.close()
        return
    rest = runner.stdout.read()
    runner.wait()
    raise UserErrorException(RUNNER_REFUSED.format(run_id=run_id, problem=(first + "\n" + rest).strip()[-2000:]))
