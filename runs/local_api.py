"""The endpoints a runner on the submitting machine calls for its compute_target="local" run
(runs/local_runs.py): claim, report, and copy its outputs/ and logs/. A member's token only: a run's
own token reaches none of them."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from runs import local_runs, selectors
from trainhub import uploads
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import signed_in_user

router = Router(tags=["runs on the submitting machine"])


class ClaimOut(Schema):
    run_id: str
    pk: int
    workspace: str
    experiment: str
    experiment_id: int
    token: str
    snapshot: str
    environment_name: str
    environment_spec: dict[str, Any]
    script: str
    command: list[str]
    arguments: list[str]
    distributed: dict[str, Any]
    node_count: int
    process_count_per_node: int
    timeout_seconds: int | None


class LogBatchIn(Schema):
    stream: str
    lines: list[str]


class ReportIn(Schema):
    logs: list[LogBatchIn] = []
    processes: list[dict[str, Any]] = []
    status: dict[str, Any] | None = None


class ReportOut(Schema):
    # Why the runner must stop the run ('' to go on): canceled, or an end the server recorded.
    stop: str


class FileOut(Schema):
    sha256: str
    size: int


@router.post("/{workspace_name}/runs/{run_id}/local/claim", response=ClaimOut)
def claim(request: HttpRequest, workspace_name: str, run_id: str) -> ClaimOut:
    member = access(request, workspace_name)
    run = selectors.run_get(member.workspace, run_id)
    claimed = local_runs.local_run_claim(access=member, user=signed_in_user(request), run=run)
    run = claimed.run
    return ClaimOut(
        run_id=run.run_id,
        pk=run.pk,
        workspace=run.workspace.name,
        experiment=run.experiment.name,
        experiment_id=run.experiment_id,
        token=claimed.token,
        snapshot=run.snapshot.sha256,
        environment_name=run.environment_name,
        environment_spec=run.environment_spec,
        script=run.script,
        command=run.command,
        arguments=run.arguments,
        distributed=run.distributed,
        node_count=run.node_count,
        process_count_per_node=run.process_count_per_node,
        timeout_seconds=run.timeout_seconds,
    )


@router.post("/{workspace_name}/runs/{run_id}/local/report", response=ReportOut)
def report(request: HttpRequest, workspace_name: str, run_id: str, body: ReportIn) -> ReportOut:
    member = access(request, workspace_name)
    run = selectors.run_get(member.workspace, run_id)
    stop = local_runs.local_run_report(
        access=member,
        user=signed_in_user(request),
        run=run,
        logs=[(batch.stream, batch.lines) for batch in body.logs],
        processes=body.processes,
        status=body.status,
    )
    return ReportOut(stop=stop)


@router.put("/{workspace_name}/runs/{run_id}/local/files/{sha256}", response={200: uploads.ProgressOut, 201: FileOut})
def put_file(request: HttpRequest, workspace_name: str, run_id: str, sha256: str, path: str) -> Status[Any]:
    """A file of the run's outputs/ or logs/, whole or one `Content-Range` chunk at a time."""
    member = access(request, workspace_name)
    run = selectors.run_get(member.workspace, run_id)
    user = signed_in_user(request)
    return uploads.put_answer(
        request,
        member,
        sha256,
        kind=local_runs.LOCAL_RUN_FILES,
        receive=lambda **kwargs: local_runs.local_run_file_receive(user=user, run=run, path=path, **kwargs),
        out=FileOut,
    )
