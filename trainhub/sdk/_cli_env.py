"""`trainhub env list|show|create|clone|export`: curated and custom environments."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trainhub.sdk.cli import action, emit, name_and_version, workspace_from
from trainhub.sdk.exceptions import UserErrorException

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.

ONE_SOURCE = "Give one of --conda-file, --pip-requirements, --docker-image or --dockerfile."


def add_parser(subparsers: Any) -> None:
    env = subparsers.add_parser("env", help="environments: what a run's code runs in")
    commands = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    action(commands, "list", list_envs, "the latest version of every environment")
    show = action(commands, "show", show_env, "an environment's spec (JSON)")
    show.add_argument("env", metavar="NAME[:VERSION]")

    create = action(commands, "create", create_env, "register a custom environment (the next version)")
    create.add_argument("name")
    create.add_argument("--conda-file", help="a conda environment file (python=, pip: section)")
    create.add_argument("--pip-requirements", help="a pip requirements file")
    create.add_argument("--docker-image", help="a Docker base image (with --conda-file or --pip-requirements)")
    create.add_argument("--dockerfile", help="a Dockerfile (with --conda-file or --pip-requirements)")

    clone = action(commands, "clone", clone_env, "register a copy of an environment under a new name")
    clone.add_argument("env", metavar="NAME[:VERSION]")
    clone.add_argument("new_name")

    export = action(commands, "export", export_env, "write the conda file and definition to a folder")
    export.add_argument("env", metavar="NAME[:VERSION]")
    export.add_argument("--directory", required=True, help="where to write them")
    export.add_argument("--overwrite", action="store_true")


def _get(workspace: Any, ref: str) -> Any:
    from trainhub.sdk.environment import Environment

    name, version = name_and_version(ref)
    return Environment.get(workspace, name, version=version)


def _summary(environment: Any) -> dict[str, Any]:
    return {
        "name": environment.name,
        "version": environment.version,
        "curated": environment.is_curated,
        "deprecated": environment.deprecated,
        "description": environment.description,
        "spec": environment._spec(),
    }


def list_envs(args: argparse.Namespace) -> int:
    from trainhub.sdk.environment import Environment

    found = [_summary(env) for env in Environment.list(workspace_from(args)).values()]
    lines = [
        f"{e['name']}:{e['version']}\t{'curated' if e['curated'] else 'custom'}"
        f"{' (deprecated)' if e['deprecated'] else ''}\t{e['description']}"
        for e in found
    ]
    return emit(args, found, lines)


def show_env(args: argparse.Namespace) -> int:
    summary = _summary(_get(workspace_from(args), args.env))
    return emit(args, summary, json.dumps(summary, indent=2))


def create_env(args: argparse.Namespace) -> int:
    from trainhub.sdk.environment import Environment

    packages = {"conda_specification": args.conda_file, "pip_requirements": args.pip_requirements}
    if args.docker_image:
        environment = Environment.from_docker_image(args.name, args.docker_image, **packages)
    elif args.dockerfile:
        environment = Environment.from_dockerfile(args.name, args.dockerfile, **packages)
    elif args.conda_file and not args.pip_requirements:
        environment = Environment.from_conda_specification(args.name, args.conda_file)
    elif args.pip_requirements and not args.conda_file:
        environment = Environment.from_pip_requirements(args.name, args.pip_requirements)
    else:
        raise UserErrorException(ONE_SOURCE)
    environment.register(workspace_from(args))
    return emit(args, _summary(environment), f"Registered {environment.name}:{environment.version}")


def clone_env(args: argparse.Namespace) -> int:
    workspace = workspace_from(args)
    clone = _get(workspace, args.env).clone(args.new_name).register(workspace)
    return emit(args, _summary(clone), f"Registered {clone.name}:{clone.version} (a copy of {args.env})")


def export_env(args: argparse.Namespace) -> int:
    environment = _get(workspace_from(args), args.env)
    environment.save_to_directory(args.directory, overwrite=args.overwrite)
    return emit(
        args,
        dict(_summary(environment), directory=args.directory),
        f"Wrote {environment.name}:{environment.version} to {args.directory}",
    )
