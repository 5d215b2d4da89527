"""The `trainhub` command: one subcommand per noun (login, workspace, env, compute, run, model, sweep,
endpoint), each a thin layer over the SDK.

A subcommand lives in its own module with `add_parser(subparsers)`; listing it in COMMANDS is all
it takes to add one. Exit codes: 0 on success, 1 with a one-line error otherwise (2 for usage).
`--json` (before or after the subcommand) prints machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from trainhub.sdk.exceptions import TrainHubError, UserErrorException

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.

COMMANDS = (
    "trainhub.sdk._cli_workspace",
    "trainhub.sdk._cli_env",
    "trainhub.sdk._cli_compute",
    "trainhub.sdk._cli_run",
    "trainhub.sdk._cli_model",
    "trainhub.sdk._cli_sweep",
    "trainhub.sdk._cli_endpoint",
)

# Every action accepts --json after its name too; SUPPRESS keeps the global one when it is absent.
JSON_OPTION = argparse.ArgumentParser(add_help=False)
JSON_OPTION.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")


def workspace_from(args: argparse.Namespace) -> Any:
    from trainhub.sdk.workspace import Workspace

    return Workspace.from_config(path=args.config)


def run_from(args: argparse.Namespace) -> Any:
    """The run named by `args.run_id` in the configured workspace."""
    from trainhub.sdk.experiment import Experiment
    from trainhub.sdk.run import Run

    return Run(Experiment(workspace_from(args), ""), args.run_id)


def name_and_version(ref: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION` (a number), as models and environments are named on the command line."""
    name, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise UserErrorException(f"{ref!r}: a version is a number, as in NAME:3.")
    return name, int(version) if version else None


def key_values(values: list[str], option: str) -> dict[str, str]:
    """Repeated `--tag KEY=VALUE` options as a dict."""
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UserErrorException(f"{option} {value!r} is not KEY=VALUE.")
        pairs[key] = text
    return pairs


def action(commands: Any, name: str, handler: Any, help: str) -> argparse.ArgumentParser:
    """A leaf subcommand (`trainhub env list`) that calls `handler(args)`."""
    parser = commands.add_parser(name, help=help, parents=[JSON_OPTION])
    parser.set_defaults(handler=handler)
    return parser


def emit(args: argparse.Namespace, data: Any, text: str | list[str]) -> int:
    """`data` as JSON with --json, else the human-readable `text`."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        for line in [text] if isinstance(text, str) else text:
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainhub", description="TrainHub from the command line.")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config.json of the workspace (default: the current folder and its parents)",
    )
    parser.add_argument("--json", action="store_true", default=False, help="print JSON for scripts")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TrainHubError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"trainhub: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trainhub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
