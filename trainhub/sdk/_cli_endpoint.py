"""`trainhub endpoint …`: list, show, logs, keys and delete the workspace's endpoints (deployed models)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trainhub.sdk.cli import action, emit, workspace_from

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.


def add_parser(subparsers: Any) -> None:
    endpoint = subparsers.add_parser("endpoint", help="endpoints: deployed models answering over HTTP")
    commands = endpoint.add_subparsers(dest="endpoint_command", metavar="ACTION", required=True)
    action(commands, "list", list_endpoints, "list endpoints with their state and scoring URL")
    show = action(commands, "show", show_endpoint, "an endpoint's details, replicas and request figures (JSON)")
    show.add_argument("name")
    logs = action(commands, "logs", endpoint_logs, "the serving replica's log")
    logs.add_argument("name")
    logs.add_argument("--tail", type=int, default=5000, metavar="N", help="the last N lines (default 5000)")
    keys = action(commands, "keys", endpoint_keys, "the endpoint's primary and secondary keys (contributors, owners)")
    keys.add_argument("name")
    delete = action(commands, "delete", delete_endpoint, "delete an endpoint: its replicas stop, their nodes free")
    delete.add_argument("name")


def _service(args: argparse.Namespace) -> Any:
    from trainhub.sdk.webservice import Webservice

    return Webservice(workspace_from(args), args.name)


def list_endpoints(args: argparse.Namespace) -> int:
    from trainhub.sdk.webservice import Webservice

    services = Webservice.list(workspace_from(args))
    rows = [s.get_details() for s in services]
    lines = ["NAME\tSTATE\tMODELS\tSCORING URI"] + [
        f"{s.name}\t{d['state']}\t{','.join(d['models'])}\t{s.scoring_uri}" for s, d in zip(services, rows, strict=True)
    ]
    return emit(args, rows, lines)


def show_endpoint(args: argparse.Namespace) -> int:
    service = _service(args)
    details = dict(service.get_details(), scoring_uri=service.scoring_uri)
    return emit(args, details, json.dumps(details, indent=2, default=str))


def endpoint_logs(args: argparse.Namespace) -> int:
    text = _service(args).get_logs(num_lines=args.tail)
    return emit(args, {"log": text}, text)


def delete_endpoint(args: argparse.Namespace) -> int:
    _service(args).delete()
    return emit(args, {"deleted": args.name}, f"Deleted endpoint {args.name}: its replicas stop and free their nodes.")


def endpoint_keys(args: argparse.Namespace) -> int:
    primary, secondary = _service(args).get_keys()
    return emit(args, {"primary": primary, "secondary": secondary}, f"primary\t{primary}\nsecondary\t{secondary}")
