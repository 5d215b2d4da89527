"""`trainhub login` and `trainhub workspace show`: connect a folder to a workspace, and see it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from trainhub.sdk._config import save_token
from trainhub.sdk.cli import action, emit, workspace_from
from trainhub.sdk.exceptions import UserErrorException

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.

CONFIG_EXISTS = "{path} already exists for another workspace or server: add --force to replace it."


def add_parser(subparsers: Any) -> None:
    login = action(
        subparsers, "login", log_in, "check a token, keep it in ~/.trainhub/credentials and write config.json"
    )
    login.add_argument("--server", required=True, help="the TrainHub URL, e.g. http://127.0.0.1:8000")
    login.add_argument("--workspace", required=True, help="the workspace's name")
    login.add_argument(
        "--token-stdin", action="store_true", help="read the token from standard input (default: prompt)"
    )
    login.add_argument("--dir", default=".", help="where to write config.json (default: here)")
    login.add_argument("--force", action="store_true", help="replace a config.json for another workspace")

    workspace = subparsers.add_parser("workspace", help="the workspace of config.json")
    commands = workspace.add_subparsers(dest="workspace_command", metavar="ACTION", required=True)
    action(commands, "show", show_workspace, "the workspace's name, server, your role and its members")


def _read_token(from_stdin: bool) -> str:
    """The token from TRAINHUB_TOKEN, standard input, or a prompt that does not echo it."""
    token = os.environ.get("TRAINHUB_TOKEN") or ""
    if not token:
        token = sys.stdin.readline() if from_stdin or not sys.stdin.isatty() else getpass.getpass("API token: ")
    token = token.strip()
    if not token:
        raise UserErrorException("No token given: make one on the workspace's Tokens page.")
    return token


def log_in(args: argparse.Namespace) -> int:
    from trainhub.sdk.workspace import Workspace

    url = args.server.rstrip("/")
    token = _read_token(args.token_stdin)
    workspace = Workspace(args.workspace, url=url, token=token)
    config = {"server_url": workspace.url, "workspace_name": workspace.name}
    path = Path(args.dir) / "config.json"
    if path.exists() and not args.force and _config_of(path) != config:
        raise UserErrorException(CONFIG_EXISTS.format(path=path))
    credentials = save_token(workspace.url, token)
    path.write_text(json.dumps(config, indent=2) + "\n")
    role = workspace.get_details()["role"]
    return emit(
        args,
        dict(config, role=role, config=str(path), credentials=str(credentials)),
        f"Logged in to {workspace.name} on {workspace.url} as {role}: token kept in {credentials}, {path} written.",
    )


def _config_of(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {key: found.get(key) for key in ("server_url", "workspace_name")}


def show_workspace(args: argparse.Namespace) -> int:
    details = workspace_from(args).get_details()
    return emit(
        args,
        details,
        [
            f"name:        {details['name']}",
            f"server:      {details['url']}",
            f"your role:   {details['role']}",
            f"members:     {details['member_count']}",
            f"description: {details['description']}",
        ],
    )
