"""Sweep endpoints of the JSON API: submit, show (children with their primary metric), cancel.

Members only: a run's token reaches none of them (they are not IN_RUN)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from ninja import Router, Schema, Status

from runs import selectors as run_selectors
from runs.api import RunIn, RunOut, run_out, submitted_environment
from sweeps import selectors, services
from sweeps.models import Sweep
from trainhub.idempotency.services import answer_once
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import signed_in_user

router = Router(tags=["sweeps"])


class SweepIn(Schema):
    run: RunIn
    sweep: dict[str, Any]


class ChildOut(Schema):
    index: int
    run_id: str
    status: str
    status_reason: str
    parameters: dict[str, Any]
    best_primary_metric: float | None
    last_primary_metric: float | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class SweepOut(Schema):
    run: RunOut
    sampling: dict[str, Any]
    policy: dict[str, Any]
    primary_metric_name: str
    primary_metric_goal: str
    max_total_runs: int
    max_concurrent_runs: int
    max_duration_minutes: int | None
    end_reason: str
    best_run_id: str | None
    children: list[ChildOut]


def sweep_out(sweep: Sweep) -> SweepOut:
    rows = selectors.child_rows(sweep)
    best = selectors.best_row(sweep, rows)
    return SweepOut(
        run=run_out(run_selectors.run_get(sweep.parent.workspace, sweep.parent.run_id)),
        sampling=sweep.sampling,
        policy=sweep.policy,
        primary_metric_name=sweep.primary_metric_name,
        primary_metric_goal=sweep.primary_metric_goal,
        max_total_runs=sweep.max_total_runs,
        max_concurrent_runs=sweep.max_concurrent_runs,
        max_duration_minutes=sweep.max_duration_minutes,
        end_reason=sweep.end_reason,
        best_run_id=best.run.run_id if best else None,
        children=[
            ChildOut(
                index=row.index,
                run_id=row.run.run_id,
                status=row.run.status,
                status_reason=row.run.status_reason,
                parameters=row.parameters,
                best_primary_metric=row.best_primary_metric,
                last_primary_metric=row.last_primary_metric,
                created_at=row.run.created_at,
                started_at=row.run.started_at,
                ended_at=row.run.ended_at,
            )
            for row in rows
        ],
    )


@router.post("/{workspace_name}/experiments/{experiment_name}/sweeps", response={201: SweepOut})
def submit_sweep(request: HttpRequest, workspace_name: str, experiment_name: str, payload: SweepIn) -> Status[SweepOut]:
    member = access(request, workspace_name)
    user = signed_in_user(request)
    given = payload.run

    def submit() -> tuple[int, Any]:
        # One transaction: an environment registered by a submit that is refused is not kept.
        with transaction.atomic():
            environment = submitted_environment(member, user, given.environment)
            sweep = services.sweep_submit(
                access=member,
                user=user,
                experiment_name=experiment_name,
                spec=payload.sweep,
                run={
                    "snapshot_sha256": given.snapshot,
                    "compute_target": given.compute_target,
                    "environment": environment,
                    "script": given.script,
                    "command": given.command,
                    "arguments": given.arguments,
                    "distributed": given.distributed,
                    "timeout_seconds": given.timeout_seconds,
                    "tags": given.tags,
                    "display_name": given.display_name,
                    "use_gpu": given.use_gpu,
                },
            )
        return 201, sweep_out(selectors.sweep_get(member.workspace, sweep.parent.run_id)).model_dump(mode="json")

    # A submit sent again with its Idempotency-Key (its answer was lost) makes no second sweep.
    status, answer = answer_once(
        request=request,
        workspace=member.workspace,
        scope=f"experiments/{experiment_name}/sweeps",
        body=request.body,
        produce=submit,
    )
    return Status(status, answer)


@router.get("/{workspace_name}/sweeps/{run_id}", response=SweepOut)
def get_sweep(request: HttpRequest, workspace_name: str, run_id: str) -> SweepOut:
    member = access(request, workspace_name)
    return sweep_out(selectors.sweep_get(member.workspace, run_id))


@router.post("/{workspace_name}/sweeps/{run_id}/cancel", response=SweepOut)
def cancel_sweep(request: HttpRequest, workspace_name: str, run_id: str) -> SweepOut:
    member = access(request, workspace_name)
    sweep = services.sweep_cancel(access=member, sweep=selectors.sweep_get(member.workspace, run_id))
    return sweep_out(selectors.sweep_get(member.workspace, sweep.parent.run_id))
