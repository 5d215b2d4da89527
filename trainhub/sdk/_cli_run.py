"""`trainhub run submit|list|show|cancel|logs|download`: runs from the command line.

`submit` packs and uploads the source folder (with a progress bar), then follows the log as
`wait_for_completion(show_output=True)` does; it exits non-zero when the run does not complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from trainhub.sdk.cli import action, emit, key_values, name_and_version, run_from, workspace_from
from trainhub.sdk.exceptions import RunFailedError, UserErrorException
from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.

DEFAULT_ENVIRONMENT = "TrainHub-PyTorch-2.13-CPU"
NOT_COMPLETED = "Run {run_id} ended {status}: {reason}"


def add_parser(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="submit runs, follow their logs, fetch their files")
    commands = run.add_subparsers(dest="run_command", metavar="ACTION", required=True)

    submit = action(commands, "submit", submit_run, "submit a script and follow its log (ARGS after --)")
    submit.add_argument("--source-dir", default=".", help="the folder to snapshot (default: here)")
    submit.add_argument("--script", help="the script to run, relative to --source-dir")
    submit.add_argument("--command", help="a command line to run instead of a script")
    submit.add_argument("--compute", required=True, help="the compute cluster")
    submit.add_argument("--env", default=DEFAULT_ENVIRONMENT, metavar="NAME[:VERSION]")
    submit.add_argument("--experiment", help="default: the source folder's name")
    submit.add_argument("--node-count", type=int, default=1)
    submit.add_argument("--process-count", type=int, help="processes in all (torch.distributed, per process)")
    submit.add_argument("--backend", default="Gloo", choices=["Gloo", "Nccl"], help="torch.distributed backend")
    submit.add_argument("--mpi", action="store_true", help="launch with mpirun (Horovod)")
    submit.add_argument("--process-count-per-node", type=int, default=1, help="with --mpi")
    submit.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--no-wait", action="store_true", help="return once the run is queued")
    submit.add_argument("arguments", nargs="*", metavar="ARGS", help="the script's arguments, after --")

    listing = action(commands, "list", list_runs, "the runs of every experiment, newest first")
    listing.add_argument("--experiment", help="only this experiment")
    listing.add_argument("--status", help="only runs in this status (e.g. Failed)")

    for name, handler, help in (
        ("show", show_run, "a run's details (JSON)"),
        ("cancel", cancel_run, "cancel a run and wait until every process of it has stopped"),
    ):
        action(commands, name, handler, help).add_argument("run_id")

    logs = action(commands, "logs", show_logs, "a run's log")
    logs.add_argument("run_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing lines until the run ends")

    download = action(commands, "download", download_run, "download a run's files (outputs/, logs/)")
    download.add_argument("run_id")
    download.add_argument("--prefix", default="outputs/", help="only files under this path (default: outputs/)")
    download.add_argument("--target-dir", default=".", help="where to put them (default: here)")


def _distributed(args: argparse.Namespace) -> Any:
    if args.mpi:
        return MpiConfiguration(process_count_per_node=args.process_count_per_node, node_count=args.node_count)
    if args.node_count > 1 or args.process_count:
        return PyTorchConfiguration(
            communication_backend=args.backend, process_count=args.process_count, node_count=args.node_count
        )
    return None


class NamedEnvironment:
    """An environment named on the command line: the submit names it and the server looks it up
    (its latest version when none is given), with no request of its own before the submit."""

    def __init__(self, name: str, version: int | None):
        self.name = name
        self.version = version

    def _to_submission(self, workspace: Any) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    def _submitted(self, recorded: dict[str, Any], workspace: Any) -> None:
        self.name, self.version = recorded["name"], recorded["version"]


def submit_run(args: argparse.Namespace) -> int:
    from trainhub.sdk.environment import Environment
    from trainhub.sdk.experiment import Experiment
    from trainhub.sdk.script_run_config import LOCAL_TARGET, ScriptRunConfig

    workspace = workspace_from(args)
    env_name, env_version = name_and_version(args.env)
    environment: Any = NamedEnvironment(env_name, env_version)
    if args.compute == LOCAL_TARGET:
        # A run on this machine needs the spec here: a user-managed environment names its interpreter.
        environment = Environment.get(workspace, env_name, version=env_version)
    config = ScriptRunConfig(
        source_directory=args.source_dir,
        script=args.script,
        command=args.command,
        arguments=args.arguments,
        compute_target=args.compute,
        environment=environment,
        distributed_job_config=_distributed(args),
    )
    experiment = args.experiment or os.path.basename(os.path.abspath(args.source_dir))
    run = Experiment(workspace, experiment).submit(config, tags=key_values(args.tag, "--tag"), show_progress=True)
    # With --json, stdout carries only the JSON: the log goes to stderr.
    log = sys.stderr if args.json else sys.stdout
    print(f"Run {run.id} submitted: {run.get_portal_url()}", file=log, flush=True)
    if args.no_wait:
        return emit(args, run.get_details(), run.id)
    with contextlib.redirect_stdout(log):
        details = run.wait_for_completion(show_output=True, raise_on_error=False)
    if args.json:
        print(json.dumps(details, indent=2, default=str))
    _raise_unless_completed(details)
    return 0


def _raise_unless_completed(details: dict[str, Any]) -> None:
    if details["status"] != "Completed":
        raise RunFailedError(
            NOT_COMPLETED.format(
                run_id=details["run_id"], status=details["status"], reason=details["status_reason"] or "no reason given"
            )
        )


def _row(details: dict[str, Any]) -> str:
    return (
        f"{details['run_id']}\t{details['experiment']}\t{details['status']}\t"
        f"{str(details['created_at'])[:19]}\t{details['compute_target']}"
    )


def list_runs(args: argparse.Namespace) -> int:
    from trainhub.sdk.experiment import Experiment

    runs = [
        run._details or run._refresh()
        for experiment in Experiment.list(workspace_from(args), experiment_name=args.experiment)
        for run in experiment.get_runs(status=args.status)
    ]
    runs.sort(key=lambda details: str(details["created_at"]), reverse=True)
    return emit(args, runs, [_row(details) for details in runs])


def show_run(args: argparse.Namespace) -> int:
    details = run_from(args).get_details()
    return emit(args, details, json.dumps(details, indent=2, default=str))


def cancel_run(args: argparse.Namespace) -> int:
    """Returns once every process of the run has stopped, so that the status shown is the final one."""
    run = run_from(args)
    run.cancel()
    details = run.wait_for_completion(raise_on_error=False)
    return emit(args, details, f"Run {run.id}: {details['status']}")


def show_logs(args: argparse.Namespace) -> int:
    lines = run_from(args).iter_log(follow=args.follow)
    if args.json:
        return emit(args, list(lines), "")
    for line in lines:
        print(line, flush=True)
    return 0


def download_run(args: argparse.Namespace) -> int:
    run = run_from(args)
    paths = run.download_files(prefix=args.prefix, output_directory=args.target_dir)
    if not paths:
        raise UserErrorException(f"Run {run.id} has no files under {args.prefix!r}.")
    return emit(args, paths, [f"Downloaded {path}" for path in paths])
