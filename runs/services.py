"""Writes about experiments, runs, snapshots, logs and run files.

`run_transition` is the only function that writes `Run.status`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import os
import re
import secrets
import tarfile
import time
from collections.abc import Iterable
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from datastores.services import run_inputs_record
from runs import events
from runs.archives import list_snapshot, snapshot_suffix
from runs.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Experiment,
    LogChunk,
    PlacementState,
    ProcessState,
    Run,
    RunFile,
    RunNode,
    RunProcess,
    RunStatus,
    RunStatusChange,
    Snapshot,
)
from runs.parameters import TABLE_KEY_LENGTH, parameters_of
from runs.run_values import run_values_create, run_values_sync
from trainhub import live, redis_keys, uploads
from trainhub.compute import catalog
from trainhub.compute.models import LIVE_NODE_STATES, ComputeCluster, Node, Provisioner
from trainhub.compute.services import LOCAL_TARGET, machine_resources, submitting_machine_target
from trainhub.environments.builders import uses_docker
from trainhub.environments.docker_builder import engine_problem
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.environments.spec import USER_MANAGED
from trainhub.redis_conn import get_redis
from trainhub.workspaces.models import Workspace, name_validator
from trainhub.workspaces.permissions import Access, Action

logger = logging.getLogger(__name__)

ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    RunStatus.QUEUED: {RunStatus.PREPARING, RunStatus.FAILED, RunStatus.CANCELED},
    RunStatus.PREPARING: {RunStatus.STARTING, RunStatus.FINALIZING, RunStatus.FAILED, RunStatus.CANCELED},
    RunStatus.STARTING: {RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.FAILED, RunStatus.CANCELED},
    RunStatus.RUNNING: {RunStatus.FINALIZING, RunStatus.FAILED, RunStatus.CANCELED},
    RunStatus.FINALIZING: {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED},
}

SNAPSHOT_TOO_LARGE = "The snapshot is {size} bytes; the limit is {limit} bytes."
SNAPSHOT_HASH_MISMATCH = uploads.HASH_MISMATCH
STORE_FAILED = "Storing {path} in the run's history failed: {error}."
SNAPSHOT_UNKNOWN = "No snapshot {sha!r} in this workspace: upload it first."
BAD_SHA = "A snapshot is named by the 64 hex digits of its sha256."
SCRIPT_OR_COMMAND = "Give either a script or a command, not both and not neither."
TOO_MANY_NODES = "This run asks for {asked} nodes but compute target {cluster!r} has at most {max} (max_nodes)."
GPU_UNAVAILABLE = (
    "Compute target {cluster!r} is of size {size}, which needs {gpus} GPU(s) per node, but "
    "{where} has no GPU: the run cannot start. Use a CPU size (e.g. STANDARD_D3_V2) or add nodes "
    "with GPUs."
)
DOCKER_UNAVAILABLE = (
    "Environment {environment!r} is a Docker environment (docker.enabled = True), but {where}: the "
    "run cannot start. Submit it to a cluster whose nodes have a Docker engine, or set "
    "docker.enabled = False."
)
GPU_ASKED_ON_CPU = (
    "WARNING: use_gpu=True asks for a GPU, but compute target {cluster!r} is of size {size}, which "
    "has none, and {where} has no GPU either: this run runs on CPU (as the cloud service runs its "
    "GPU image on a CPU size)."
)
USER_MANAGED_ON_A_CLUSTER = (
    "WARNING: environment {environment!r} is user-managed (python.user_managed_dependencies = True): "
    "compute_target='local' runs it with the submitting machine's own Python, but a cluster's nodes build "
    "it from the packages it names, as any other environment (the cloud service would use its image's "
    "Python as it is). Name the packages the script imports, or submit to compute_target='local'."
)
LOCAL_NAME_TAKEN = (
    "This workspace has a compute target named 'local', which the cloud SDK's compute_target='local' "
    "(the submitting machine) would mean too: rename that compute target to submit to the submitting machine."
)
LOCAL_ONE_NODE = (
    "compute_target='local' runs on the submitting machine, one node: this run asks for {nodes} nodes. "
    "Run several processes on it with process_count, or submit to a cluster."
)
LOCAL_NO_DOCKER = (
    "Environment {environment!r} is a Docker environment: compute_target='local' runs virtualenv "
    "environments only. Set docker.enabled = False, or submit to a cluster whose nodes have a Docker engine."
)
LOCAL_NO_INPUTS = (
    "compute_target='local' takes no datastore or dataset inputs: give the script a path on the "
    "submitting machine, or submit to a cluster."
)
# As every other way a run is tagged: a longer name could not name a runs-table column or filter.
BAD_TAG_NAME = "A tag's name is 1 to " + str(TABLE_KEY_LENGTH) + " characters: {key!r} has {length}."
# The log stream of what TrainHub says about a run when it is submitted.
SUBMIT_STREAM = "submit"
CANCELED_BY_USER = "Canceled by the user."
RUN_ALREADY_FINAL = "Run {run_id} already ended ({status})."
NODE_LOST = "node lost"
LOG_LINE_LIMIT = 16_384
SHA_PATTERN = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------- status


# What a transition reads and writes of a run (not its spec, parameters, tags...: read for nothing).
TRANSITION_FIELDS = ("status", "status_reason", "started_at", "ended_at", "exit_code", "failed_rank", "error_traceback")


def run_transition(
    run_pk: int,
    to_status: str,
    *,
    reason: str = "",
    exit_code: int | None = None,
    failed_rank: int | None = None,
    error_traceback: str | None = None,
) -> Run | None:
    """Move a run to `to_status` if the move is allowed; returns None when it is not (already
    there, or a final state was reached first: the first final state wins). On the way to a final
    state the run is read whole, for what its end sets off; on the way to any other, only what the
    move needs (its other fields are read if asked for)."""
    with transaction.atomic():
        locked = Run.objects.select_for_update()
        if to_status not in FINAL_STATUSES:
            locked = locked.only(*TRANSITION_FIELDS)
        run = locked.get(pk=run_pk)
        if not _transition(
            run, to_status, reason=reason, exit_code=exit_code, failed_rank=failed_rank, error_traceback=error_traceback
        ):
            return None
    if to_status in FINAL_STATUSES:
        _after_final(run)
    return run


def _transition(
    run: Run,
    to_status: str,
    *,
    reason: str = "",
    exit_code: int | None = None,
    failed_rank: int | None = None,
    error_traceback: str | None = None,
) -> bool:
    """`run` (locked by the caller's transaction, with at least TRANSITION_FIELDS) moved to
    `to_status` and the move recorded in its history; False when the move is not allowed."""
    if to_status == run.status or to_status not in ALLOWED_TRANSITIONS.get(run.status, set()):
        return False
    now = timezone.now()
    run.status = to_status
    fields = ["status"]
    if reason:
        run.status_reason = reason
        fields.append("status_reason")
    if to_status == RunStatus.RUNNING and run.started_at is None:
        run.started_at = now
        fields.append("started_at")
    if to_status in FINAL_STATUSES:
        run.ended_at = now
        fields.append("ended_at")
        if run.started_at is None:
            run.started_at = now
            fields.append("started_at")
    if exit_code is not None:
        run.exit_code = exit_code
        fields.append("exit_code")
    if failed_rank is not None and run.failed_rank is None:
        run.failed_rank = failed_rank
        fields.append("failed_rank")
    if error_traceback:
        run.error_traceback = error_traceback[-20_000:]
        fields.append("error_traceback")
    run.save(update_fields=fields)
    RunStatusChange.objects.create(run=run, status=to_status, at=now, reason=reason)
    payload = {
        "status": run.status,
        "reason": run.status_reason,
        "at": now.isoformat(),
        "exit_code": run.exit_code,
        "failed_rank": run.failed_rank,
    }
    run_pk = run.pk
    transaction.on_commit(lambda: live.publish_run_status(run_pk, payload))
    return True


def _after_final(run: Run) -> None:
    # Every node of the run stops its ranks when this key appears (cancel, failure, node lost);
    # each node's job then returns its node to idle.
    get_redis().set(redis_keys.run_abort(run.pk), run.status, ex=3600)
    events.run_ended.notify(run)


def fail_run(run_pk: int, reason: str, **extra: Any) -> Run | None:
    return run_transition(run_pk, RunStatus.FAILED, reason=reason, **extra)


# ---------------------------------------------------------------- experiments and snapshots


def experiment_get_or_create(*, access: Access, name: str) -> Experiment:
    access.require(Action.WRITE)
    name_validator(name)
    experiment, _ = Experiment.objects.get_or_create(workspace=access.workspace, name=name)
    return experiment


def snapshot_limit_bytes() -> int:
    return settings.TRAINHUB_SNAPSHOT_MAX_BYTES


SNAPSHOT_UPLOADS = uploads.Kind(name="snapshots", limit=snapshot_limit_bytes, too_large=SNAPSHOT_TOO_LARGE)


def _snapshot_of(workspace: Workspace, sha256: str) -> Snapshot | None:
    return Snapshot.objects.filter(workspace=workspace, sha256=sha256).first()


def _snapshot_commit(workspace: Workspace, sha256: str, staged: uploads.StagedFile) -> Snapshot:
    """Move a checked snapshot into storage (one file per content, whichever workspace sent it)."""
    storage_name = f"snapshots/{sha256}{snapshot_suffix(staged)}"
    size = staged.size
    if not default_storage.exists(storage_name):
        stored = default_storage.save(storage_name, staged)
        if stored != storage_name:
            # Another upload of the same content won the race: keep one copy.
            default_storage.delete(stored)
    files = _snapshot_listing(storage_name)
    try:
        with transaction.atomic():
            return Snapshot.objects.create(
                workspace=workspace,
                sha256=sha256,
                size=size,
                storage_name=storage_name,
                files=files,
                file_count=len(files),
            )
    except IntegrityError:
        return Snapshot.objects.get(workspace=workspace, sha256=sha256)


def snapshot_receive(*, access: Access, sha256: str, chunk: uploads.Chunk) -> Snapshot | uploads.Progress:
    """Take one chunk of an uploaded snapshot: the snapshot once all of it arrived and matched its
    sha256, else how much of it the server holds (see trainhub/uploads.py)."""
    access.require(Action.WRITE)
    return uploads.receive(
        workspace=access.workspace,
        kind=SNAPSHOT_UPLOADS,
        sha256=sha256,
        chunk=chunk,
        existing=partial(_snapshot_of, access.workspace),
        commit=partial(_snapshot_commit, access.workspace),
    )


def snapshot_store(*, access: Access, sha256: str, stream: IO[bytes]) -> Snapshot:
    """Store a snapshot the server makes itself (an ONNX export's), checked, once."""
    access.require(Action.WRITE)
    return uploads.store_stream(
        workspace=access.workspace,
        kind=SNAPSHOT_UPLOADS,
        sha256=sha256,
        stream=stream,
        existing=partial(_snapshot_of, access.workspace),
        commit=partial(_snapshot_commit, access.workspace),
    )


def one_file_snapshot(*, access: Access, name: str, text: bytes) -> Snapshot:
    """The snapshot of a job that runs TrainHub's own code (an export, a scoring server with no
    script): one small file `name` holding `text`, packed the same way every time (so stored once)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(text))
    data = raw.getvalue()
    return snapshot_store(access=access, sha256=hashlib.sha256(data).hexdigest(), stream=io.BytesIO(data))


def _snapshot_listing(storage_name: str) -> list[list[Any]]:
    """The files of a stored snapshot, for the run page; a damaged archive lists as empty
    here and is refused by the node that unpacks it. Reading stops after the first entries:
    an archive of millions of empty members must not hold the server's memory or CPU."""
    try:
        with default_storage.open(storage_name, "rb") as handle:
            return list_snapshot(handle, settings.TRAINHUB_SNAPSHOT_MAX_FILES)
    except OSError:
        return []


# ---------------------------------------------------------------- submit


def _placement(distributed: dict[str, Any] | None) -> tuple[int, int]:
    """(node_count, process_count_per_node) of a distributed config."""
    if not distributed:
        return 1, 1
    node_count = int(distributed.get("node_count") or 1)
    per_node = distributed.get("process_count_per_node")
    total = distributed.get("process_count")
    if per_node is None and total is not None:
        total = int(total)
        if total % node_count:
            raise ValidationError(f"process_count ({total}) must be a multiple of node_count ({node_count}).")
        per_node = total // node_count
    per_node = int(per_node or 1)
    if node_count < 1 or per_node < 1:
        raise ValidationError("node_count and process counts must be at least 1.")
    return node_count, per_node


def run_submit(
    *,
    access: Access,
    user: User | None,
    experiment_name: str,
    snapshot_sha256: str,
    compute_target: str,
    environment: EnvironmentChoice,
    script: str | None = None,
    command: list[str] | None = None,
    arguments: list[Any] | None = None,
    distributed: dict[str, Any] | None = None,
    timeout_seconds: int | None = None,
    tags: dict[str, str] | None = None,
    display_name: str = "",
    use_gpu: bool = False,
    sweep_parent: bool = False,
) -> Run:
    """A new run, queued for its cluster; with `sweep_parent`, the run of a sweep instead: it runs
    nothing itself (it is Running from the start and never placed), its children do."""
    access.require(Action.WRITE)
    if bool(script) == bool(command):
        raise ValidationError(SCRIPT_OR_COMMAND)
    for key in tags or {}:
        if not 0 < len(str(key)) <= TABLE_KEY_LENGTH:
            raise ValidationError(BAD_TAG_NAME.format(key=str(key)[:60], length=len(str(key))))
    # Not its listing of files (up to TRAINHUB_SNAPSHOT_MAX_FILES of them): a run needs only its id.
    snapshot = Snapshot.objects.filter(workspace=access.workspace, sha256=snapshot_sha256).only("id", "sha256").first()
    if snapshot is None:
        raise ValidationError(SNAPSHOT_UNKNOWN.format(sha=snapshot_sha256), code="snapshot_unknown")
    node_count, per_node = _placement(distributed)
    cluster: ComputeCluster | None = None
    if compute_target == LOCAL_TARGET:
        cluster = submitting_machine_target(access.workspace)
        _check_local(cluster, node_count, environment)
    else:
        cluster = access.workspace.clusters.filter(name=compute_target).first()
    if cluster is None:
        raise ValidationError(f"No compute target named {compute_target!r} in workspace {access.workspace.name!r}.")
    # A Slurm cluster's limits and GPUs are Slurm's to hold: it keeps a job it cannot run yet pending
    # with its reason, and refuses one that can never run at sbatch.
    if node_count > cluster.max_nodes and not cluster.is_slurm:
        raise ValidationError(TOO_MANY_NODES.format(asked=node_count, cluster=cluster.name, max=cluster.max_nodes))
    # Slurm holds its own limits; the submitting machine is the submitter's to know.
    unchecked = cluster.is_slurm or cluster.is_submitting_machine
    gpu_problem, gpu_warning = ("", "") if unchecked else _gpu_problem(cluster, use_gpu)
    if gpu_problem:
        # Refused before anything is recorded: a run that could never start is not a run.
        raise ValidationError(gpu_problem, code="gpu_unavailable")
    docker_problem = "" if unchecked else _docker_problem(cluster, environment)
    if docker_problem:
        # Likewise: it would wait at the head of the cluster's queue, and hold up the runs behind it.
        raise ValidationError(docker_problem, code="docker_unavailable")
    with transaction.atomic():
        experiment, number = _next_run_number(access=access, experiment_name=experiment_name)
        run = Run.objects.create(
            workspace=access.workspace,
            experiment=experiment,
            number=number,
            run_id=f"{experiment.name}_{int(time.time())}_{secrets.token_hex(4)}",
            display_name=display_name[:200],
            created_by=user if user is not None and user.is_authenticated else None,
            cluster=cluster,
            snapshot=snapshot,
            environment_name=environment.name,
            environment_version=environment.version,
            environment_spec=environment.spec,
            script=script or "",
            command=[str(c) for c in command or []],
            arguments=[str(a) for a in arguments or []],
            parameters=parameters_of(arguments or []),
            distributed=distributed or {},
            node_count=node_count,
            process_count_per_node=per_node,
            timeout_seconds=timeout_seconds,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
        )
        run_values_create(run)
        RunStatusChange.objects.create(run=run, status=RunStatus.QUEUED, at=run.created_at)
        if sweep_parent:
            Run.objects.filter(pk=run.pk).update(
                status=RunStatus.RUNNING, started_at=run.created_at, dispatched_at=run.created_at
            )
            RunStatusChange.objects.create(run=run, status=RunStatus.RUNNING, at=run.created_at)
            run.refresh_from_db()
            return run
        run_inputs_record(run=run)
        if cluster.is_submitting_machine and run.inputs.exists():
            raise ValidationError(LOCAL_NO_INPUTS)
        said = [gpu_warning] if gpu_warning else []
        if environment.spec.get(USER_MANAGED) and not cluster.is_submitting_machine:
            said.append(USER_MANAGED_ON_A_CLUSTER.format(environment=environment.name))
        # A database restored or reset hands out run ids again: the new run starts from clean Redis
        # keys, before anything (the warning) is numbered in its log. With nothing to say, a run
        # placed here has them cleared with its jobs sent (one round trip to Redis, not two).
        if said:
            transaction.on_commit(lambda: clear_run_keys(run.pk))
            transaction.on_commit(lambda: log_append(run.pk, SUBMIT_STREAM, said))
        placed = any(events.run_submitted.notify(run, cluster, not said))
        if not said and not placed:
            transaction.on_commit(lambda: clear_run_keys(run.pk))
        if placed:
            return run
    transaction.on_commit(lambda: events.run_queued.notify(cluster.pk))
    return run


def _next_run_number(*, access: Access, experiment_name: str) -> tuple[Experiment, int]:
    """The experiment (made by its first run) and the number of its next run, in the caller's
    transaction. The experiment's row stays locked until the commit (SQLite's IMMEDIATE transactions
    hold the whole database), so two submits never get one number."""
    access.require(Action.WRITE)
    name_validator(experiment_name)
    experiment = Experiment.objects.select_for_update().filter(workspace=access.workspace, name=experiment_name).first()
    if experiment is None:
        # Another submit may make it first: its number is then read after the increment.
        experiment = experiment_get_or_create(access=access, name=experiment_name)
        Experiment.objects.filter(pk=experiment.pk).update(last_run_number=F("last_run_number") + 1)
        experiment.refresh_from_db(fields=["last_run_number"])
        return experiment, experiment.last_run_number
    experiment.last_run_number += 1
    experiment.save(update_fields=["last_run_number"])
    return experiment, experiment.last_run_number


@transaction.atomic
def run_submit_child(*, parent: Run, arguments: list[str], tags: dict[str, str], display_name: str) -> Run:
    """A run of a sweep: its parent's script, environment and cluster, with its own arguments.
    The parent's submit checked all of it."""
    experiment = parent.experiment
    Experiment.objects.filter(pk=experiment.pk).update(last_run_number=F("last_run_number") + 1)
    experiment.refresh_from_db(fields=["last_run_number"])
    run = Run.objects.create(
        workspace=parent.workspace,
        experiment=experiment,
        number=experiment.last_run_number,
        run_id=f"{experiment.name}_{int(time.time())}_{secrets.token_hex(4)}",
        display_name=display_name[:200],
        created_by=parent.created_by,
        cluster=parent.cluster,
        snapshot=parent.snapshot,
        environment_name=parent.environment_name,
        environment_version=parent.environment_version,
        environment_spec=parent.environment_spec,
        script=parent.script,
        command=parent.command,
        arguments=arguments,
        parameters=parameters_of(arguments),
        distributed=parent.distributed,
        node_count=parent.node_count,
        process_count_per_node=parent.process_count_per_node,
        timeout_seconds=parent.timeout_seconds,
        tags=tags,
        parent=parent,
    )
    run_values_create(run)
    RunStatusChange.objects.create(run=run, status=RunStatus.QUEUED, at=run.created_at)
    run_inputs_record(run=run)
    # Placed in this transaction where it can be, as a run's submit places its run (its keys cleared
    # with its job sent; nothing is logged yet).
    if not any(events.run_submitted.notify(run, parent.cluster, True)):
        transaction.on_commit(lambda: clear_run_keys(run.pk))
        transaction.on_commit(lambda: events.run_queued.notify(parent.cluster_id))
    return run


def _check_local(cluster: ComputeCluster, node_count: int, environment: EnvironmentChoice) -> None:
    """What a run on the submitting machine cannot ask for: it is one machine, running virtualenvs."""
    if not cluster.is_submitting_machine:
        raise ValidationError(LOCAL_NAME_TAKEN)
    if node_count > 1:
        raise ValidationError(LOCAL_ONE_NODE.format(nodes=node_count))
    if uses_docker(environment.spec):
        raise ValidationError(LOCAL_NO_DOCKER.format(environment=environment.name))


def _gpu_problem(cluster: ComputeCluster, use_gpu: bool) -> tuple[str, str]:
    """(why the run cannot start, a warning for its log): a GPU size without GPUs anywhere is
    refused; use_gpu=True on a CPU size runs on CPU, saying so."""
    size = catalog.get_size(cluster.vm_size)
    gpus_needed = size.gpus if size else 0
    if use_gpu and not gpus_needed:
        gpus_needed = 1
    if not gpus_needed:
        return "", ""
    nodes = Node.objects.filter(cluster=cluster, state__in=LIVE_NODE_STATES)
    if nodes.filter(gpus__gte=gpus_needed).exists():
        return "", ""
    if cluster.provisioner == Provisioner.LOCAL:
        if int(machine_resources()["gpus"]) >= gpus_needed:
            return "", ""
        where = "this machine (where its local provisioner starts nodes)"
    elif nodes.exists():
        where = "any of its nodes"
    else:
        return "", ""
    if size and size.gpus:
        return GPU_UNAVAILABLE.format(cluster=cluster.name, size=cluster.vm_size, gpus=gpus_needed, where=where), ""
    return "", GPU_ASKED_ON_CPU.format(cluster=cluster.name, size=cluster.vm_size, where=where)


def _docker_problem(cluster: ComputeCluster, environment: EnvironmentChoice) -> str:
    if not uses_docker(environment.spec):
        return ""
    nodes = Node.objects.filter(cluster=cluster, state__in=LIVE_NODE_STATES)
    if nodes.filter(docker=True).exists():
        return ""
    if cluster.provisioner == Provisioner.LOCAL:
        if engine_problem() is None:
            return ""
        where = f"no Docker engine answers on this machine, where compute target {cluster.name!r} starts its nodes"
    elif nodes.exists():
        where = f"none of compute target {cluster.name!r}'s nodes has a Docker engine"
    else:
        return ""
    return DOCKER_UNAVAILABLE.format(environment=environment.name, where=where)


# ---------------------------------------------------------------- cancel


DISPLAY_NAME_TOO_LONG = "A run's display name has at most 200 characters."
DESCRIPTION_TOO_LONG = "A run's description has at most 10,000 characters."
BAD_TAG = "Tags are names of at most 255 characters with values of at most 1,000: {key!r} is not."


def run_update(
    *,
    access: Access,
    run: Run,
    display_name: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    removed_tags: list[str] | None = None,
) -> Run:
    """A run's name and notes, edited by people: any value left None stays as it is; `tags` are
    added or replaced, `removed_tags` dropped. Checked whole before anything changes."""
    access.require(Action.WRITE)
    if display_name is not None and len(display_name) > 200:
        raise ValidationError(DISPLAY_NAME_TOO_LONG)
    if description is not None and len(description) > 10_000:
        raise ValidationError(DESCRIPTION_TOO_LONG)
    for key, value in (tags or {}).items():
        if not key.strip() or len(key) > 255 or len(str(value)) > 1000:
            raise ValidationError(BAD_TAG.format(key=key))
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if display_name is not None:
            locked.display_name = display_name.strip()
        if description is not None:
            locked.description = description.strip()
        merged = {**locked.tags, **{key.strip(): str(value) for key, value in (tags or {}).items()}}
        locked.tags = {key: value for key, value in merged.items() if key not in set(removed_tags or [])}
        locked.save(update_fields=["display_name", "description", "tags"])
        run_values_sync(locked)
    return locked


def run_cancel(*, access: Access, run: Run) -> Run:
    access.require(Action.WRITE)
    if run.is_final:
        return run
    if any(events.run_cancel_asked.notify(access, run)):
        run.refresh_from_db()
        return run
    return run_stop(run, reason="")


def run_stop(run: Run, *, reason: str) -> Run:
    """Cancel a run for TrainHub itself (`reason` shows on the run; empty: canceled by its user)."""
    Run.objects.filter(pk=run.pk, cancel_requested_at__isnull=True).update(
        cancel_requested_at=timezone.now(), cancel_reason=reason[:500]
    )
    if run.status == RunStatus.QUEUED and run.dispatched_at is None:
        run_transition(run.pk, RunStatus.CANCELED, reason=reason or "Canceled before it started.")
    else:
        get_redis().set(redis_keys.run_abort(run.pk), RunStatus.CANCELED, ex=3600)
        events.run_stopping.notify(run)
    run.refresh_from_db()
    return run


# ---------------------------------------------------------------- logs


def clear_dispatch_keys(run_pk: int, pipe: Any = None) -> None:
    """What a placement of the run starts without: an earlier abort, rendezvous and node ends (in
    `pipe`, a Redis pipeline the caller sends, where given). Never its log counter: lines may be
    stored already (the submit's own), and a counter deleted between another writer's increment and
    its insert would hand out those numbers twice."""
    (pipe if pipe is not None else get_redis()).delete(
        redis_keys.run_abort(run_pk), redis_keys.run_rendezvous(run_pk), redis_keys.run_peers_done(run_pk)
    )


def clear_run_keys(run_pk: int, pipe: Any = None) -> None:
    """Every Redis key of a run id, for a run made anew (a database reset hands out ids again; in
    `pipe`, a Redis pipeline the caller sends, where given)."""
    peers = redis_keys.run_peers_done(run_pk)
    (pipe if pipe is not None else get_redis()).delete(
        redis_keys.run_abort(run_pk), redis_keys.run_rendezvous(run_pk), peers, redis_keys.run_log_sequence(run_pk)
    )


# KEYS[1] += ARGV[1], where KEYS[1] exists or ARGV[2] (the top stored) is given to start it from; nil otherwise.
LOG_SEQUENCE_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 then
    if ARGV[2] == '' then return nil end
    redis.call('set', KEYS[1], ARGV[2])
end
return redis.call('incrby', KEYS[1], ARGV[1])
"""


@functools.cache
def _log_sequence_script() -> Any:
    return get_redis().register_script(LOG_SEQUENCE_SCRIPT)


def _next_log_sequence(key: str, count: int, stored_top: int | None) -> int | None:
    result = _log_sequence_script()(keys=[key], args=[count, "" if stored_top is None else stored_top])
    return None if result is None else int(result)


def log_append(run_pk: int, stream: str, lines: list[str]) -> LogChunk | None:
    """Persist a batch of lines (numbered within the run), then broadcast it."""
    if not lines:
        return None
    lines = [line if len(line) <= LOG_LINE_LIMIT else line[:LOG_LINE_LIMIT] + " …[cut]" for line in lines]
    key = redis_keys.run_log_sequence(run_pk)
    # The counter lives in Redis; after a Redis restart it continues from what is stored. The check
    # and the increment are one script: a Redis that restarted between them (the increment retried
    # until it answered) started the counter again from 0, and the run's lines again from 1.
    last = _next_log_sequence(key, len(lines), None)
    if last is None:
        stored = LogChunk.objects.filter(run_id=run_pk).aggregate(top=Max(F("first_seq") + F("line_count") - 1))
        last = _next_log_sequence(key, len(lines), stored["top"] or 0)
        assert last is not None
    first = last - len(lines) + 1
    chunk = LogChunk.objects.create(
        run_id=run_pk, stream=stream, first_seq=first, line_count=len(lines), text="\n".join(lines)
    )
    live.publish_log_lines(run_pk, stream, first, lines)
    return chunk


# ---------------------------------------------------------------- files


def run_file_store(*, run: Run, path: str, local_path: str | os.PathLike[str]) -> RunFile | None:
    """Copy one file of a node's working directory into the run's history."""
    if RunFile.objects.filter(run=run, path=path).exists():
        return None
    digest = hashlib.sha256()
    size = 0
    wanted = f"runs/{run.run_id}/{path}"
    with open(local_path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        handle.seek(0)
        try:
            storage_name = default_storage.save(wanted, File(handle))
        except OSError as error:
            # A full disk leaves the half-written file behind, listed nowhere: remove it.
            if not RunFile.objects.filter(storage_name=wanted).exists():
                default_storage.delete(wanted)
            raise OSError(error.errno, STORE_FAILED.format(path=path, error=error.strerror or error)) from error
    try:
        with transaction.atomic():
            return RunFile.objects.create(
                run=run, path=path, size=size, sha256=digest.hexdigest(), storage_name=storage_name
            )
    except IntegrityError:
        default_storage.delete(storage_name)
        return None


def lost_node_runs(node_ids: Iterable[int]) -> list[int]:
    """Fail the active runs placed on lost nodes; returns their ids."""
    run_ids = set(
        RunNode.objects.filter(node_id__in=list(node_ids), run__status__in=ACTIVE_STATUSES).values_list(
            "run_id", flat=True
        )
    )
    for run_pk in sorted(run_ids):
        fail_run(run_pk, NODE_LOST)
    return sorted(run_ids)


# ---------------------------------------------------------------- placements and processes


def placement_assign(*, run: Run, node: Node, node_rank: int) -> RunNode:
    """Node `node` holds rank `node_rank` of the run's gang (in the dispatch's transaction)."""
    return RunNode.objects.create(run=run, node=node, node_rank=node_rank)


def placement_join(*, run: Run, node: Node, node_rank: int) -> None:
    """A host that Slurm allocated joins the run's gang as its task starts."""
    RunNode.objects.update_or_create(
        run=run, node_rank=node_rank, defaults={"node": node, "state": PlacementState.ASSIGNED}
    )


# What placement_preparing answers a node whose job was taken back before it took it up.
TAKEN_BACK = "taken back"


def placement_preparing(
    run_pk: int, node_rank: int, *, lead: bool, node_pk: int | None = None, token_salt: str | None = None
) -> str | None:
    """The node took its job: its placement is preparing, and with the lead node's the run is
    Preparing, in one transaction (one wait for the database's write lock on the way to the ranks).
    A run that has ended or whose cancel was asked is left as it is: its status (Canceled for a
    cancel) is returned, for the node to end its part as it does on an abort; None otherwise.
    Given the node and the run's token salt the node read with its job, a job that is no longer
    this node's (Redis lost it after the node took it, and the controller placed the run again:
    a new token, perhaps another node) answers TAKEN_BACK, and nothing of the run is touched."""
    with transaction.atomic():
        run, ended = _unless_ended(run_pk)
        if token_salt is not None and run.token_salt != token_salt:
            return TAKEN_BACK
        if ended:
            return ended
        placement = RunNode.objects.filter(run_id=run_pk, node_rank=node_rank)
        if node_pk is not None:
            placement = placement.filter(node_id=node_pk)
        if not placement.update(state=PlacementState.PREPARING) and node_pk is not None:
            return TAKEN_BACK
        if lead:
            _transition(run, RunStatus.PREPARING)
    return None


def run_starting(run_pk: int) -> str | None:
    """The lead node has made its host ready: the run is Starting, unless it has ended or its cancel
    was asked meanwhile (that status, Canceled for a cancel, is returned; None otherwise), read in
    the same transaction rather than asked of Redis first."""
    with transaction.atomic():
        run, ended = _unless_ended(run_pk)
        if ended:
            return ended
        _transition(run, RunStatus.STARTING)
    return None


def _unless_ended(run_pk: int) -> tuple[Run, str | None]:
    """The run, locked (what a transition needs), and its status if it has ended or Canceled if its
    cancel was asked (what the run's abort key in Redis says, read from the database)."""
    run = Run.objects.select_for_update().only(*TRANSITION_FIELDS, "cancel_requested_at", "token_salt").get(pk=run_pk)
    if run.is_final:
        return run, str(run.status)
    if run.cancel_requested_at is not None:
        return run, str(RunStatus.CANCELED)
    return run, None


def placement_done(run_pk: int, node_rank: int) -> None:
    """The node is done with its share of the run (whatever the run's end), recorded first, then
    told to the lead node waiting on Redis."""
    RunNode.objects.filter(run_id=run_pk, node_rank=node_rank).update(
        state=PlacementState.DONE, finished_at=timezone.now()
    )
    pipe = get_redis().pipeline(transaction=False)
    pipe.rpush(redis_keys.run_peers_done(run_pk), node_rank)
    pipe.expire(redis_keys.run_peers_done(run_pk), 3600)
    pipe.execute()


def process_started(
    *, run_pk: int, rank: int, node_rank: int, local_rank: int, node_name: str, pid: int | None = None
) -> None:
    """The rank's process row, made or (a rank recorded before it started: mpirun's) brought up to
    date in one statement, as the rank starts beside it (0.2 ms of the node's CPU, against 0.6 for a
    read and a write in a transaction)."""
    started = RunProcess(
        run_id=run_pk,
        rank=rank,
        node_rank=node_rank,
        local_rank=local_rank,
        node_name=node_name,
        pid=pid,
        state=ProcessState.RUNNING,
        started_at=timezone.now(),
    )
    RunProcess.objects.bulk_create(
        [started],
        update_conflicts=True,
        unique_fields=["run", "rank"],
        update_fields=["node_rank", "local_rank", "node_name", "pid", "state", "started_at"],
    )


def process_ended(run_pk: int, rank: int, state: ProcessState, exit_code: int | None = None) -> None:
    RunProcess.objects.filter(run_id=run_pk, rank=rank).update(
        state=state, exit_code=exit_code, ended_at=timezone.now()
    )


def running_processes_ended(
    run_pk: int,
    state: ProcessState,
    *,
    node_rank: int | None = None,
    exit_code: int | None = None,
    except_rank: int | None = None,
) -> None:
    """The processes of the run (of one node, with `node_rank`) still recorded as running end in
    `state`: those a launcher or mpirun started, whose ends the node learns all at once."""
    running = RunProcess.objects.filter(run_id=run_pk, state=ProcessState.RUNNING)
    if node_rank is not None:
        running = running.filter(node_rank=node_rank)
    if except_rank is not None:
        running = running.exclude(rank=except_rank)
    running.update(state=state, exit_code=exit_code, ended_at=timezone.now())
