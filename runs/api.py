"""Experiment, run, snapshot, log and run-file endpoints of the JSON API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest
from ninja import Router, Schema, Status
from redis.exceptions import RedisError

from runs import selectors, services
from runs.models import FINAL_STATUSES, Run, RunStatus
from trainhub import live, uploads
from trainhub.api_auth import IN_RUN
from trainhub.downloads import file_response
from trainhub.environments.selectors import EnvironmentChoice, environment_for_run
from trainhub.environments.services import environment_for_submit
from trainhub.idempotency.services import answer_once
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import Access, signed_in_user

router = Router(tags=["runs"])
logger = logging.getLogger(__name__)

# The longest a request waits for a run's lines (the SDK asks for less, to stay below proxies' idle
# timeouts).
LOG_WAIT_MAX_SECONDS = 120.0
# An answer holds the chunks of about this many lines, at most.
LOG_ANSWER_LINES = 5000
# The live events that wake a request waiting for a run's lines, or for its end.
LOG_EVENTS = frozenset({"log.lines", "run.status"})
STATUS_EVENTS = frozenset({"run.status"})
# Without Redis nothing wakes a waiting request: it answers after this long, as a poll would.
LOG_WAIT_WITHOUT_REDIS_SECONDS = 1.0
NAME_THE_ENVIRONMENT = "Name the run's environment."


class EnvironmentRef(Schema):
    name: str | None = None
    version: int | None = None
    # The SDK's environment that the workspace may not have yet: registered by the submit.
    spec: dict[str, Any] | None = None
    description: str = ""


class RunIn(Schema):
    snapshot: str
    compute_target: str
    environment: EnvironmentRef
    script: str | None = None
    command: list[str] | None = None
    arguments: list[Any] = []
    distributed: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    tags: dict[str, Any] = {}
    display_name: str = ""
    use_gpu: bool = False


class StatusChangeOut(Schema):
    status: str
    at: datetime
    reason: str


class ProcessOut(Schema):
    rank: int
    node_rank: int
    local_rank: int
    node_name: str
    pid: int | None
    state: str
    exit_code: int | None


class RunOut(Schema):
    run_id: str
    number: int
    experiment: str
    display_name: str
    description: str
    status: str
    status_reason: str
    # A Slurm cluster's run: its job's id, and Slurm's state and reason for it (PENDING, Resources).
    slurm_job: dict[str, str] | None = None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    compute_target: str
    environment: dict[str, Any]
    script: str
    command: list[str]
    arguments: list[str]
    distributed: dict[str, Any]
    node_count: int
    process_count_per_node: int
    exit_code: int | None
    failed_rank: int | None
    error_traceback: str
    tags: dict[str, Any]
    properties: dict[str, Any]
    snapshot: str
    status_history: list[StatusChangeOut]
    processes: list[ProcessOut]
    portal_url: str


class RunChangeIn(Schema):
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    removed_tags: list[str] | None = None


class FileOut(Schema):
    path: str
    size: int
    sha256: str


class LogChunkOut(Schema):
    stream: str
    first_seq: int
    lines: list[str]


class LogsOut(Schema):
    status: str
    chunks: list[LogChunkOut]
    # The run has ended and this answer holds every line it stored after `after`: nothing more to ask.
    complete: bool = False


class SnapshotOut(Schema):
    sha256: str
    size: int


def _slurm_job(run: Run) -> dict[str, str] | None:
    job = selectors.slurm_job_of(run) if run.cluster.is_slurm else None
    if job is None:
        return None
    return {"job_id": job.job_id, "state": job.state, "reason": job.reason, "nodes": job.nodes}


def run_out(run: Run, *, just_submitted: bool = False) -> RunOut:
    """A run as the API shows it; `just_submitted`: the run its submit made, whose history is its
    Queued and which has no process yet (not read back)."""
    if just_submitted:
        history = [StatusChangeOut(status=RunStatus.QUEUED, at=run.created_at, reason="")]
        processes: list[ProcessOut] = []
    else:
        history = [StatusChangeOut(status=c.status, at=c.at, reason=c.reason) for c in run.status_changes.all()]
        processes = [
            ProcessOut(
                rank=p.rank,
                node_rank=p.node_rank,
                local_rank=p.local_rank,
                node_name=p.node_name,
                pid=p.pid,
                state=p.state,
                exit_code=p.exit_code,
            )
            for p in run.processes.all()
        ]
    return RunOut(
        run_id=run.run_id,
        number=run.number,
        experiment=run.experiment.name,
        display_name=run.display_name,
        description=run.description,
        status=run.status,
        status_reason=run.status_reason,
        slurm_job=_slurm_job(run),
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        duration_seconds=run.duration_seconds,
        compute_target=run.cluster.name,
        environment={"name": run.environment_name, "version": run.environment_version},
        script=run.script,
        command=run.command,
        arguments=run.arguments,
        distributed=run.distributed,
        node_count=run.node_count,
        process_count_per_node=run.process_count_per_node,
        exit_code=run.exit_code,
        failed_rank=run.failed_rank,
        error_traceback=run.error_traceback,
        tags=run.tags,
        properties=run.properties,
        snapshot=run.snapshot.sha256,
        status_history=history,
        processes=processes,
        portal_url=f"/w/{run.workspace.name}/runs/{run.run_id}/",
    )


def resolve_environment(workspace, ref: EnvironmentRef) -> EnvironmentChoice:
    """A registered environment: by name, and version (the latest when none is given)."""
    if ref.name is None:
        raise ValidationError(NAME_THE_ENVIRONMENT)
    return environment_for_run(workspace=workspace, name=ref.name, version=ref.version)


def submitted_environment(member: Access, user: User, ref: EnvironmentRef) -> EnvironmentChoice:
    """The environment a submit names, or the one whose spec it sends, registered as that
    environment's next version: call it in the submit's transaction."""
    if ref.spec is None:
        return resolve_environment(member.workspace, ref)
    if ref.name is None:
        raise ValidationError(NAME_THE_ENVIRONMENT)
    return environment_for_submit(access=member, user=user, name=ref.name, spec=ref.spec, description=ref.description)


@router.get("/{workspace_name}/snapshots/{sha256}", response=SnapshotOut)
def get_snapshot(request: HttpRequest, workspace_name: str, sha256: str) -> SnapshotOut:
    member = access(request, workspace_name)
    snapshot = selectors.snapshot_find(member.workspace, sha256)
    if snapshot is None:
        raise Http404(services.SNAPSHOT_UNKNOWN.format(sha=sha256))
    return SnapshotOut(sha256=snapshot.sha256, size=snapshot.size)


@router.put("/{workspace_name}/snapshots/{sha256}", response={200: uploads.ProgressOut, 201: SnapshotOut})
def put_snapshot(request: HttpRequest, workspace_name: str, sha256: str) -> Status[uploads.ProgressOut | SnapshotOut]:
    """A snapshot, whole or one `Content-Range` chunk at a time (resumable: trainhub/uploads.py)."""
    return uploads.put_answer(
        request,
        access(request, workspace_name),
        sha256,
        kind=services.SNAPSHOT_UPLOADS,
        receive=services.snapshot_receive,
        out=SnapshotOut,
    )


@router.post("/{workspace_name}/experiments/{experiment_name}/runs", response={201: RunOut})
def submit_run(request: HttpRequest, workspace_name: str, experiment_name: str, payload: RunIn) -> Status[RunOut]:
    member = access(request, workspace_name)
    user = signed_in_user(request)

    def submit() -> tuple[int, Any]:
        # One transaction: an environment registered by a submit that is refused is not kept.
        with transaction.atomic():
            environment = submitted_environment(member, user, payload.environment)
            run = services.run_submit(
                access=member,
                user=user,
                experiment_name=experiment_name,
                snapshot_sha256=payload.snapshot,
                compute_target=payload.compute_target,
                environment=environment,
                script=payload.script,
                command=payload.command,
                arguments=payload.arguments,
                distributed=payload.distributed,
                timeout_seconds=payload.timeout_seconds,
                tags=payload.tags,
                display_name=payload.display_name,
                use_gpu=payload.use_gpu,
            )
        return 201, run_out(run, just_submitted=True).model_dump(mode="json")

    # A submit sent again with its Idempotency-Key (its answer was lost) makes no second run.
    status, answer = answer_once(
        request=request,
        workspace=member.workspace,
        scope=f"experiments/{experiment_name}/runs",
        body=request.body,
        produce=submit,
    )
    return Status(status, answer)


@router.get("/{workspace_name}/experiments", response=list[dict])
def list_experiments(request: HttpRequest, workspace_name: str) -> list[dict]:
    member = access(request, workspace_name)
    return [
        {"name": e.name, "created_at": e.created_at.isoformat()} for e in selectors.experiments_of(member.workspace)
    ]


@router.get("/{workspace_name}/experiments/{experiment_name}/runs", response=list[RunOut])
def list_runs(
    request: HttpRequest,
    workspace_name: str,
    experiment_name: str,
    status: str | None = None,
    before_id: int | None = None,
) -> list[RunOut]:
    member = access(request, workspace_name)
    experiment = selectors.experiment_get(member.workspace, experiment_name)
    return [run_out(r) for r in selectors.runs_page(experiment, status=status, before_id=before_id)]


@router.get("/{workspace_name}/runs/{run_id}", response=RunOut, auth=IN_RUN)
async def get_run(request: HttpRequest, workspace_name: str, run_id: str, wait: float = 0) -> RunOut:
    """A run; with `wait` (seconds), a run that has not ended is answered once it ends, or after that
    long (wait_for_completion() asks again)."""
    run = await sync_to_async(_member_run)(request, workspace_name, run_id)

    def ended() -> bool:
        run.refresh_from_db(fields=["status"])
        return run.is_final

    await _wait_for(run, ended, wait, STATUS_EVENTS)
    return await sync_to_async(lambda: run_out(selectors.run_get(run.workspace, run.run_id)))()


@router.patch("/{workspace_name}/runs/{run_id}", response=RunOut)
def update_run(request: HttpRequest, workspace_name: str, run_id: str, body: RunChangeIn) -> RunOut:
    """A run's display name, description and tags, as people edit them (not from inside runs)."""
    member = access(request, workspace_name)
    run = services.run_update(access=member, run=selectors.run_get(member.workspace, run_id), **body.dict())
    return run_out(selectors.run_get(member.workspace, run.run_id))


@router.post("/{workspace_name}/runs/{run_id}/cancel", response=RunOut, auth=IN_RUN)
def cancel_run(request: HttpRequest, workspace_name: str, run_id: str) -> RunOut:
    member = access(request, workspace_name)
    run = services.run_cancel(access=member, run=selectors.run_get(member.workspace, run_id))
    return run_out(selectors.run_get(member.workspace, run.run_id))


@router.get("/{workspace_name}/runs/{run_id}/logs", response=LogsOut, auth=IN_RUN)
async def get_logs(
    request: HttpRequest,
    workspace_name: str,
    run_id: str,
    after: int = 0,
    stream: str | None = None,
    wait: float = 0,
    known: int | None = None,
) -> LogsOut:
    """The lines after `after`. With `wait` (seconds), an answer that would hold no line past `known`
    (the last line the client has; `after` when not given) for a run that has not ended waits up to
    that long for the run's next lines or end: a client follows a run with no poll interval."""
    run = await sync_to_async(_member_run)(request, workspace_name, run_id)
    known = after if known is None else known
    answers: list[LogsOut] = []

    def news() -> bool:
        answers.append(_logs_after(run, after, stream))
        return _news(answers[-1], known)

    await _wait_for(run, news, wait, LOG_EVENTS)
    return answers[-1]


def _member_run(request: HttpRequest, workspace_name: str, run_id: str) -> Run:
    return selectors.run_get(access(request, workspace_name).workspace, run_id)


def _logs_after(run: Run, after: int, stream: str | None) -> LogsOut:
    # Read the status first: lines stored before a final status are then all in this answer.
    run.refresh_from_db(fields=["status"])
    status = run.status
    chunks = selectors.log_chunks_after(run, after, stream=stream, max_lines=LOG_ANSWER_LINES)
    complete = status in FINAL_STATUSES and sum(c.line_count for c in chunks) < LOG_ANSWER_LINES
    return LogsOut(status=status, chunks=[LogChunkOut(**c.as_message()) for c in chunks], complete=complete)


def _news(answer: LogsOut, known: int) -> bool:
    """Whether the answer tells a client that has every line up to `known` something new."""
    return answer.status in FINAL_STATUSES or any(c.first_seq + len(c.lines) - 1 > known for c in answer.chunks)


async def _wait_for(run: Run, ready: Callable[[], bool], wait: float, events: frozenset[str]) -> None:
    """Returns once `ready()` (called in a thread) holds, or after `wait` seconds (at most
    LOG_WAIT_MAX_SECONDS): `ready()` is asked at once, then again at each of the run's live events
    of the types `events`. A request that waits holds no thread."""
    if await sync_to_async(ready)() or wait <= 0:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, LOG_WAIT_MAX_SECONDS)
    try:
        async with live.watching(live.run_logs_group(run.pk), events) as woken:
            # Joined: an event from now on wakes this request; what came before, `ready()` sees.
            while not await sync_to_async(ready)():
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), deadline - loop.time())
                if loop.time() >= deadline:
                    await sync_to_async(ready)()
                    return
                woken.clear()
    except (RedisError, OSError, TimeoutError):
        logger.warning("live events of run %s unavailable: waiting as a poll", run.run_id, exc_info=True)
        await asyncio.sleep(max(0.0, min(deadline - loop.time(), LOG_WAIT_WITHOUT_REDIS_SECONDS)))
        await sync_to_async(ready)()


@router.get("/{workspace_name}/runs/{run_id}/files", response=list[FileOut], auth=IN_RUN)
def list_files(request: HttpRequest, workspace_name: str, run_id: str) -> list[FileOut]:
    member = access(request, workspace_name)
    run = selectors.run_get(member.workspace, run_id)
    return [FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in selectors.run_files(run)]


@router.get("/{workspace_name}/runs/{run_id}/file", auth=IN_RUN)
def download_file(request: HttpRequest, workspace_name: str, run_id: str, path: str):
    member = access(request, workspace_name)
    run = selectors.run_get(member.workspace, run_id)
    found = selectors.run_file_get(run, path)
    return file_response(
        request,
        storage_name=found.storage_name,
        filename=found.path.rsplit("/", 1)[-1],
        size=found.size,
        sha256=found.sha256,
    )
