"""The runner of a compute_target="local" run, on the machine that submitted it (the cloud SDK's
"run on this machine, tracked in the workspace"). `Experiment.submit` starts it as a subprocess:

    python -m runs.local_runner RUN_ID --snapshot PACKED.tar.gz [--python INTERPRETER]
                                    (the workspace's URL, name and the member's token on stdin;
                                     INTERPRETER: a user-managed environment's, chosen by the SDK)
    python -m runs.local_runner --check                           (can this machine run one?)

It does for the run what a node does for its share (runs/execution.py): builds or reuses the
environment, unpacks the snapshot, starts the launch plan's processes in the run's box under the
same executor (runs/executor.py), and copies outputs/ and logs/ into the run's history at the end,
but it holds none of a node's credentials (database, Redis, secret key): everything it records goes
to the server through the API with the member's token (runs/local_runs.py), and its ranks get the
run's own token, as on a node. It needs TrainHub's node package on this machine (a checkout with
`make install`) and bubblewrap for the box; its folder is TRAINHUB_LOCAL_RUNNER_DIR
(~/.trainhub/local-runner by default: environments, run folders)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import django

from trainhub.sdk import Workspace

RUNNER_DIR_VARIABLE = "TRAINHUB_LOCAL_RUNNER_DIR"
CLAIMED = "TrainHub local runner: the run is taken"
# A node's settings that must not point the runner at a site's data, database or Redis.
SITE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SECRET_KEY",
    "TRAINHUB_NODE_WORK_DIR",
    "TRAINHUB_ENV_CACHE_DIR",
    "TRAINHUB_DATA_CACHE_DIR",
    "TRAINHUB_UPLOAD_DIR",
)


def runner_folder() -> Path:
    return Path(os.environ.get(RUNNER_DIR_VARIABLE) or Path.home() / ".trainhub" / "local-runner").absolute()


def setup_django() -> None:
    """The node package's settings, on the runner's own folder: nothing of a site's data, database,
    Redis or secret key, which the runner never has."""
    for name in SITE_VARIABLES:
        os.environ.pop(name, None)
    os.environ["TRAINHUB_DATA_DIR"] = str(runner_folder())
    os.environ["TRAINHUB_LOCAL_RUNNER"] = "true"
    os.environ["DJANGO_SETTINGS_MODULE"] = "trainhub.settings"
    django.setup()


def log_path(run_id: str) -> Path:
    """Where the runner's own output goes once it has its run (the run's lines go to the server)."""
    return runner_folder() / "runner-logs" / f"{run_id}.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runs.local_runner", description=__doc__)
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--snapshot", type=Path)
    parser.add_argument("--python", type=Path, help="the interpreter of a user-managed environment")
    parser.add_argument("--check", action="store_true", help="say whether this machine can run a local run")
    options = parser.parse_args(argv)
    setup_django()
    # Here, not at the top: the execution path imports Django's models, which need the settings above.
    from runs.local_execution import LocalExecution, machine_problem

    problem = machine_problem()
    if options.check or problem:
        if problem:
            print(problem, flush=True)
        return 1 if problem else 0
    if not options.run_id or options.snapshot is None:
        parser.error("give RUN_ID and --snapshot")
    credentials = json.loads(sys.stdin.readline())
    try:
        workspace = Workspace(credentials["workspace"], url=credentials["server_url"], token=credentials["token"])
        execution = LocalExecution(workspace, options.run_id, options.snapshot, user_python=options.python)
        execution.take_run()
    except Exception as error:
        options.snapshot.unlink(missing_ok=True)
        print(f"{type(error).__name__}: {error}", flush=True)
        return 1
    # The submitter's SDK waits for this line, then leaves the runner to the run.
    print(CLAIMED, flush=True)
    log = log_path(options.run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        os.dup2(handle.fileno(), sys.stdout.fileno())
        os.dup2(handle.fileno(), sys.stderr.fileno())
    try:
        return execution.execute()
    finally:
        options.snapshot.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
