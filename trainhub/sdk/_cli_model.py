"""`trainhub model …`: list, show, register, download and export-onnx registered models."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from trainhub.sdk.cli import action, emit, key_values, name_and_version, workspace_from
from trainhub.sdk.exceptions import UserErrorException

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.


def add_parser(subparsers: Any) -> None:
    model = subparsers.add_parser("model", help="registered models and their versions")
    commands = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    listing = action(commands, "list", list_models, "list model versions")
    listing.add_argument("--name", help="only this model")
    listing.add_argument(
        "--tag", action="append", default=[], metavar="KEY[=VALUE]", help="only versions with this tag"
    )
    listing.add_argument("--all-versions", action="store_true", help="every version, not only the latest")

    show = action(commands, "show", show_model, "a version's details, files and lineage (JSON)")
    show.add_argument("model", metavar="NAME[:VERSION]")

    register = action(commands, "register", register_model, "register a local file or folder, or a run's output")
    register.add_argument("--name", required=True, help="the model's name")
    register.add_argument("--path", required=True, help="a local file or folder, or with --run-id a path of the run")
    register.add_argument("--run-id", help="register the run's stored output at --path (nothing is uploaded)")
    register.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    register.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    register.add_argument("--description", default="")

    download = action(commands, "download", download_model, "download a version, checking every file's sha256")
    download.add_argument("model", metavar="NAME[:VERSION]", help="the latest version unless VERSION is given")
    download.add_argument("--target-dir", default=".", help="where to put it (default: here)")
    download.add_argument("--exist-ok", action="store_true", help="replace files that are already there")

    export = action(commands, "export-onnx", export_model, "export a version to ONNX on a node and wait for it")
    export.add_argument("model", metavar="NAME[:VERSION]")
    export.add_argument("--shape", required=True, help="sample input shape, e.g. 1,3,224,224")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--tolerance", type=float, help="largest max-abs difference PyTorch vs onnxruntime accepted")
    export.add_argument("--compute-target", help="the cluster to run the export on")


def _model(args: argparse.Namespace) -> Any:
    from trainhub.sdk.model import Model

    name, version = name_and_version(args.model)
    return Model(workspace_from(args), name=name, version=version)


def list_models(args: argparse.Namespace) -> int:
    from trainhub.sdk.model import Model

    found = Model.list(workspace_from(args), name=args.name, tags=args.tag, latest=not args.all_versions)
    lines = []
    for model in found:
        tags = ",".join(f"{k}={v}" if v else k for k, v in model.tags.items())
        lines.append(f"{model.name}:{model.version}\t{model.size}\t{model.created_time[:19]}\t{tags}")
    return emit(args, [model.get_details() for model in found], lines)


def show_model(args: argparse.Namespace) -> int:
    details = _model(args).get_details()
    return emit(args, details, json.dumps(details, indent=2))


def register_model(args: argparse.Namespace) -> int:
    from trainhub.sdk.model import Model

    workspace = workspace_from(args)
    tags, properties = key_values(args.tag, "--tag"), key_values(args.property, "--property")
    if args.run_id:
        from trainhub.sdk.experiment import Experiment
        from trainhub.sdk.run import Run

        model = Run(Experiment(workspace, ""), args.run_id).register_model(
            model_name=args.name,
            model_path=args.path,
            tags=tags,
            properties=properties,
            description=args.description,
        )
    else:
        model = Model.register(
            workspace,
            model_path=args.path,
            model_name=args.name,
            tags=tags,
            properties=properties,
            description=args.description,
        )
    return emit(args, model.get_details(), f"Registered {model.id}")


def download_model(args: argparse.Namespace) -> int:
    from trainhub.sdk.model import TargetExistsError

    model = _model(args)
    try:
        path = model.download(target_dir=args.target_dir, exist_ok=args.exist_ok, show_progress=True)
    except TargetExistsError as error:
        raise UserErrorException(f"{error.path} already exists: add --exist-ok to replace it.") from None
    return emit(
        args, dict(model.get_details(), downloaded_to=path), f"Downloaded {model.id} to {path} (sha256 checked)"
    )


def export_model(args: argparse.Namespace) -> int:
    try:
        shape = [int(part) for part in args.shape.split(",")]
    except ValueError:
        raise UserErrorException(f"--shape {args.shape!r} is not numbers separated by commas.") from None
    model = _model(args)
    # With --json, stdout carries only the JSON: the export's log goes to stderr.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        exported = model.export_onnx(
            sample_input_shape=shape,
            opset=args.opset,
            tolerance=args.tolerance,
            compute_target=args.compute_target,
            show_output=True,
        )
    difference = exported.properties.get("parity_max_abs_diff")
    return emit(
        args,
        dict(exported.get_details(), exported_from=model.id),
        f"Exported {model.id} to {exported.id}: max abs difference {difference}",
    )
