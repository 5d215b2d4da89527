"""Runs on the submitting machine (compute_target="local", as the cloud SDK names it): the server
records the run as for a cluster, and the submitter's runner (runs/local_runner.py, on their machine)
claims it, carries out its launch plan in the run's box there and reports back through the API.

The server trusts that machine no more than its member: the runner acts with the member's own API
token, on runs that member submitted to "local" only; what it reports goes through the same checks
as a node's (state moves through run_transition, files only under outputs/ and logs/ with checked
paths, lines cut to the same length), and it never gets what a node holds (the database, Redis, the
secret key). A run's page says the run executed on the submitting machine: its results are as
trustworthy as that machine."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from registry.paths import clean_relative_path
from runs import services
from runs.models import ACTIVE_STATUSES, ProcessState, Run, RunFile, RunStatus
from runs.tokens import run_token
from trainhub import redis_keys, uploads
from trainhub.compute.models import Provisioner
from trainhub.redis_conn import get_redis
from trainhub.workspaces.permissions import Access, Action
from trainhub.workspaces.selectors import hash_token

NOT_LOCAL = "Run {run_id} is not a compute_target='local' run: the nodes of its compute target run it."
NOT_SUBMITTER = "Run {run_id} runs on the machine of the member who submitted it, not on yours."
ALREADY_CLAIMED = "Run {run_id} is already taken by its runner, or has ended ({status})."
NOT_CLAIMED = "Run {run_id} has not been claimed by a runner on the submitting machine."
BAD_STREAM = "A log stream is named by 1 to 64 letters, digits, '_', '-' or '.': not {stream!r}."
BAD_STATUS = "A runner reports the states Preparing to Completed, Failed or Canceled: not {status!r}."
BAD_FILE_PATH = "A run's files are under outputs/ or logs/: not {path!r}."
RUNNER_SILENT = (
    "The submitting machine stopped reporting: its runner sent nothing for {seconds} s (the machine "
    "slept, lost its network or the runner was killed), so the run is lost with it."
)
SUBMITTING_MACHINE = "the submitting machine"
# A runner reports at least every few seconds while it runs (runs/local_runner.py, HEARTBEAT_SECONDS).
RUNNER_SILENT_SECONDS = 60
STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REPORTED_STATUSES = {
    RunStatus.PREPARING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.FINALIZING,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELED,
}
MAX_PROCESSES_PER_REPORT = 1000

LOCAL_RUN_FILES = uploads.Kind(name="local-run-files", limit=lambda: settings.TRAINHUB_MODEL_MAX_BYTES)


@dataclass(frozen=True)
class Claim:
    run: Run
    token: str


def is_local(run: Run) -> bool:
    return run.cluster.provisioner == Provisioner.SUBMITTER


def _submitter_only(access: Access, user: User | None, run: Run) -> None:
    access.require(Action.WRITE)
    if not is_local(run):
        raise ValidationError(NOT_LOCAL.format(run_id=run.run_id), code="not_local")
    if user is None or run.created_by_id != user.pk:
        # As for another workspace's run: nobody but its submitter learns more of it here.
        raise Http404(NOT_SUBMITTER.format(run_id=run.run_id))


def _claimed(run: Run) -> None:
    if run.dispatched_at is None:
        raise ValidationError(NOT_CLAIMED.format(run_id=run.run_id), code="not_claimed")


def runner_seen(run_pk: int) -> None:
    get_redis().set(redis_keys.run_local_runner(run_pk), 1, ex=RUNNER_SILENT_SECONDS)


def local_run_claim(*, access: Access, user: User | None, run: Run) -> Claim:
    """The submitter's runner takes its queued run, once: the run's token (for its ranks, acting
    for this run only, as on a node) comes back with it."""
    _submitter_only(access, user, run)
    with transaction.atomic():
        locked = Run.objects.select_for_update().select_related("workspace", "experiment").get(pk=run.pk)
        if locked.status != RunStatus.QUEUED or locked.dispatched_at is not None:
            raise ValidationError(
                ALREADY_CLAIMED.format(run_id=run.run_id, status=locked.status), code="already_claimed"
            )
        locked.dispatched_at = timezone.now()
        locked.token_salt = secrets.token_hex(16)
        token = run_token(locked.pk, locked.token_salt)
        locked.token_hash = hash_token(token)
        locked.save(update_fields=["dispatched_at", "token_salt", "token_hash"])
    services.clear_dispatch_keys(locked.pk)
    runner_seen(locked.pk)
    return Claim(run=locked, token=token)


def local_run_report(
    *,
    access: Access,
    user: User | None,
    run: Run,
    logs: list[tuple[str, list[str]]],
    processes: list[dict[str, Any]],
    status: dict[str, Any] | None,
) -> str:
    """What the runner saw since its last report: log lines by stream, processes started and ended,
    and a state for the run (checked by run_transition, as a node's). Returns why the runner must
    stop the run ('' to go on): its cancel, or the end the server recorded (e.g. a timeout)."""
    _submitter_only(access, user, run)
    _claimed(run)
    for stream, _lines in logs:
        if not STREAM_NAME.match(stream):
            raise ValidationError(BAD_STREAM.format(stream=stream))
    if status is not None and status.get("status") not in REPORTED_STATUSES:
        raise ValidationError(BAD_STATUS.format(status=status.get("status")))
    events = [_process_event(run.pk, event) for event in processes[:MAX_PROCESSES_PER_REPORT]]
    run.refresh_from_db(fields=["status", "cancel_requested_at"])
    if run.is_final:
        return str(run.status)
    runner_seen(run.pk)
    for stream, lines in logs:
        services.log_append(run.pk, stream, [str(line) for line in lines])
    for kind, arguments in events:
        getattr(services, kind)(**arguments)
    if status is not None:
        reason = str(status.get("reason") or "")[:2000]
        if status["status"] == RunStatus.CANCELED:
            run.refresh_from_db(fields=["cancel_reason"])
            reason = run.cancel_reason or services.CANCELED_BY_USER
        services.run_transition(
            run.pk,
            status["status"],
            reason=reason,
            exit_code=_int_or_none(status.get("exit_code")),
            failed_rank=_int_or_none(status.get("failed_rank")),
            error_traceback=str(status.get("traceback") or "") or None,
        )
    value = get_redis().get(redis_keys.run_abort(run.pk))
    return value.decode() if isinstance(value, bytes) else (value or "")


def _process_event(run_pk: int, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A process record of the runner's, as the services a node calls take it (runs/executor.py)."""
    kind = event.get("event")
    try:
        if kind == "started":
            return "process_started", {
                "run_pk": run_pk,
                "rank": int(event["rank"]),
                "node_rank": 0,
                "local_rank": int(event.get("local_rank") or 0),
                "node_name": SUBMITTING_MACHINE,
                "pid": _int_or_none(event.get("pid")),
            }
        state = ProcessState(event["state"])
        if kind == "ended":
            return "process_ended", {
                "run_pk": run_pk,
                "rank": int(event["rank"]),
                "state": state,
                "exit_code": _int_or_none(event.get("exit_code")),
            }
        if kind == "running_ended":
            return "running_processes_ended", {
                "run_pk": run_pk,
                "state": state,
                "exit_code": _int_or_none(event.get("exit_code")),
                "except_rank": _int_or_none(event.get("except_rank")),
            }
    except (KeyError, TypeError, ValueError):
        pass
    raise ValidationError(f"Not a process event: {str(event)[:200]}")


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def local_run_file_receive(
    *, access: Access, user: User | None, run: Run, path: str, sha256: str, chunk: uploads.Chunk
) -> RunFile | uploads.Progress:
    """One chunk of a file of the run's outputs/ or logs/, as the runner copies them at the run's end."""
    _submitter_only(access, user, run)
    _claimed(run)
    clean = clean_relative_path(path, what="path")
    if clean.split("/", 1)[0] not in ("outputs", "logs") or "/" not in clean:
        raise ValidationError(BAD_FILE_PATH.format(path=path))

    def existing(_sha256: str) -> RunFile | None:
        return RunFile.objects.filter(run=run, path=clean).first()

    def commit(_sha256: str, staged: uploads.StagedFile) -> RunFile:
        stored = services.run_file_store(run=run, path=clean, local_path=staged.path)
        return stored or RunFile.objects.get(run=run, path=clean)

    return uploads.receive(
        workspace=access.workspace, kind=LOCAL_RUN_FILES, sha256=sha256, chunk=chunk, existing=existing, commit=commit
    )


def reap_silent_local_runs() -> list[int]:
    """Fail the claimed, active runs of submitting machines whose runner stopped reporting."""
    candidates = list(
        Run.objects.filter(
            cluster__provisioner=Provisioner.SUBMITTER, status__in=ACTIVE_STATUSES, dispatched_at__isnull=False
        ).values_list("pk", flat=True)
    )
    if not candidates:
        return []
    redis = get_redis()
    pipe = redis.pipeline(transaction=False)
    for pk in candidates:
        pipe.exists(redis_keys.run_local_runner(pk))
    silent = [pk for pk, alive in zip(candidates, pipe.execute(), strict=True) if not alive]
    for pk in silent:
        services.fail_run(pk, RUNNER_SILENT.format(seconds=RUNNER_SILENT_SECONDS))
    return silent
