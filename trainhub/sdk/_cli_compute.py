"""`trainhub compute list|show|create`: the workspace's clusters and their nodes."""

from __future__ import annotations

import argparse
from typing import Any

from trainhub.sdk.cli import action, emit, workspace_from

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.


def add_parser(subparsers: Any) -> None:
    compute = subparsers.add_parser("compute", help="compute clusters and their nodes")
    commands = compute.add_subparsers(dest="compute_command", metavar="ACTION", required=True)
    action(commands, "list", list_computes, "list the clusters")
    show = action(commands, "show", show_compute, "a cluster's size, limits and nodes")
    show.add_argument("name")
    create = action(commands, "create", create_compute, "create a cluster")
    create.add_argument("name")
    create.add_argument("--vm-size", default="STANDARD_D2_V2", help="a size of the catalog (default: STANDARD_D2_V2)")
    create.add_argument("--min-nodes", type=int, default=0)
    create.add_argument("--max-nodes", type=int, default=4)
    create.add_argument("--idle-seconds", type=int, default=1800, help="idle seconds before scale-down")
    create.add_argument(
        "--provisioner", default="local", help="local (nodes started on this machine) or manual (started by hand)"
    )


def _line(details: dict[str, Any]) -> str:
    nodes = details["nodes"]
    busy = sum(1 for node in nodes if node["state"] == "busy")
    return (
        f"{details['name']}\t{details['vm_size']}\t{details['min_nodes']}-{details['max_nodes']} nodes\t"
        f"{len(nodes)} up, {busy} busy\t{details['provisioning_state']}"
    )


def list_computes(args: argparse.Namespace) -> int:
    from trainhub.sdk.compute import ComputeTarget

    found = [target.serialize() for target in ComputeTarget.list(workspace_from(args))]
    return emit(args, found, [_line(details) for details in found])


def show_compute(args: argparse.Namespace) -> int:
    from trainhub.sdk.compute import ComputeTarget

    details = ComputeTarget(workspace=workspace_from(args), name=args.name).serialize()
    nodes = [
        f"  {node['name']}\t{node['state']}\t{node['cpus']} CPU\t{node['gpus']} GPU\t{node['hostname']}"
        for node in details["nodes"]
    ]
    return emit(args, details, [_line(details), *nodes])


def create_compute(args: argparse.Namespace) -> int:
    from trainhub.sdk.compute import AmlCompute, ComputeTarget

    configuration = AmlCompute.provisioning_configuration(
        vm_size=args.vm_size,
        min_nodes=args.min_nodes,
        max_nodes=args.max_nodes,
        idle_seconds_before_scaledown=args.idle_seconds,
        provisioner=args.provisioner,
    )
    target = ComputeTarget.create(workspace_from(args), args.name, configuration)
    return emit(args, target.serialize(), f"Created {_line(target.serialize())}")
