"""`trainhub sweep show|cancel ID`: a hyperparameter sweep from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from trainhub.sdk.cli import action, emit, workspace_from

# The SDK's facades are imported in each handler: `trainhub` builds every subcommand's parser as it
# starts, and importing them all would add about half a second to every command.


def add_parser(subparsers: Any) -> None:
    sweep = subparsers.add_parser("sweep", help="show or cancel a hyperparameter sweep")
    commands = sweep.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    for name, handler, help in (
        ("show", show_sweep, "a sweep's children, best first, with their parameters and primary metric"),
        ("cancel", cancel_sweep, "start no more children and cancel every child still queued or running"),
    ):
        action(commands, name, handler, help).add_argument("run_id", help="the sweep's run id")


def _hyperdrive_run(args: argparse.Namespace) -> Any:
    from trainhub.sdk.experiment import Experiment
    from trainhub.sdk.train.hyperdrive.run import HyperDriveRun

    return HyperDriveRun(Experiment(workspace_from(args), ""), args.run_id)


def _lines(sweep: dict[str, Any]) -> list[str]:
    names = sweep["sampling"]["order"]
    metric = sweep["primary_metric_name"]
    goal = sweep["primary_metric_goal"].lower()
    head = [
        f"Sweep {sweep['run']['run_id']}: {sweep['run']['status']}"
        + (f" ({sweep['end_reason']})" if sweep["end_reason"] else ""),
        f"Primary metric: {metric} ({goal}); best run: {sweep['best_run_id'] or '-'}",
        "",
    ]
    ranked = sorted(
        sweep["children"],
        key=lambda c: (
            c["best_primary_metric"] is None,
            -(c["best_primary_metric"] or 0) if goal == "maximize" else (c["best_primary_metric"] or 0),
        ),
    )
    columns = ["child", "run", "status", *names, metric]
    rows = [
        [
            str(c["index"]),
            c["run_id"],
            c["status"],
            *[str(c["parameters"].get(name, "")) for name in names],
            "" if c["best_primary_metric"] is None else f"{c['best_primary_metric']:.6g}",
        ]
        for c in ranked
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    table = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [columns, *rows]]
    reasons = [f"child {c['index']}: {c['status_reason']}" for c in ranked if c["status"] in ("Canceled", "Failed")]
    return head + table + ([""] + reasons if reasons else [])


def show_sweep(args: argparse.Namespace) -> int:
    sweep = _hyperdrive_run(args)._sweep()
    return emit(args, sweep, _lines(sweep))


def cancel_sweep(args: argparse.Namespace) -> int:
    run = _hyperdrive_run(args)
    run.cancel()
    sweep = run._sweep()
    return emit(args, sweep, _lines(sweep))
