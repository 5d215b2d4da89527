"""The `trainhub` command: one subcommand per noun (model, …), each a thin layer over the SDK.

A subcommand lives in its own module with `add_parser(subparsers)`; listing it in COMMANDS
is all it takes to add one (env, compute, run, login, …).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

COMMANDS = ("trainhub.sdk._cli_model",)


def workspace_from(args: argparse.Namespace) -> Any:
    from trainhub.sdk.workspace import Workspace

    return Workspace.from_config(path=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainhub", description="TrainHub from the command line.")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config.json of the workspace (default: the current folder and its parents)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from trainhub.sdk.exceptions import TrainHubError

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
