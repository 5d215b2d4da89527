"""Reads about experiments, runs, logs and run files, scoped to a workspace."""

from __future__ import annotations

from django.db.models import F, OuterRef, QuerySet, Subquery, Sum
from django.http import Http404

from runs.models import Experiment, LogChunk, Run, RunFile, RunNode, RunStatus, SlurmJob, Snapshot
from runs.parameters import parameters_of
from trainhub.compute.models import ComputeCluster
from trainhub.workspaces.models import Membership, Workspace
from trainhub.workspaces.selectors import hash_token

RUN_NOT_FOUND = "No run {run_id!r} in this workspace."
EXPERIMENT_NOT_FOUND = "No experiment {name!r} in this workspace."
FILE_NOT_FOUND = "Run {run_id} has no file {path!r}."
PAGE_SIZE = 50


def run_for_token(token: str) -> Run | None:
    """The run a run token was made for, whatever its status (the caller refuses ended ones), with
    its submitter's role in its workspace as `member_role` (None once they are no longer a member)."""
    if len(token) > 200:
        return None
    role = Membership.objects.filter(workspace_id=OuterRef("workspace_id"), user_id=OuterRef("created_by_id"))
    return (
        Run.objects.select_related("workspace", "created_by")
        .filter(token_hash=hash_token(token))
        .annotate(member_role=Subquery(role.values("role")[:1]))
        .first()
    )


def run_for_member(user, run_id: str) -> Run | None:
    """The run, when `user` is a member of its workspace (a live socket's check)."""
    run = Run.objects.filter(run_id=run_id).first()
    if run is None or not Membership.objects.filter(workspace_id=run.workspace_id, user=user).exists():
        return None
    return run


MAX_STATES = 100


def run_states(workspace: Workspace, run_ids: list[str]) -> dict[str, dict]:
    """Status and duration of up to MAX_STATES runs of the workspace, for lists that follow them."""
    found = Run.objects.filter(run_id__in=run_ids[:MAX_STATES]).only(
        "run_id", "workspace_id", "status", "started_at", "ended_at"
    )
    # The workspace is checked here: in SQL SQLite would walk all its runs instead of the run_id index.
    runs = [run for run in found if run.workspace_id == workspace.pk]
    return {
        run.run_id: {
            "status": run.status,
            "final": run.is_final,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "duration": run.duration_seconds,
        }
        for run in runs
    }


def recent_runs_of(workspace: Workspace, *, exclude: list[int], limit: int = 50) -> list[Run]:
    """The workspace's newest runs, of every experiment, but those given."""
    runs = Run.objects.filter(workspace=workspace).exclude(pk__in=exclude).select_related("experiment")
    return list(runs.order_by("-id")[:limit])


def experiments_of(workspace: Workspace) -> QuerySet[Experiment]:
    return workspace.experiments.order_by("name")


def recent_runs(workspace: Workspace, limit: int = 10) -> list[Run]:
    """The workspace's newest runs, of every experiment."""
    runs = Run.objects.filter(workspace=workspace).select_related("experiment", "cluster", "created_by")
    return list(runs.order_by("-id")[:limit])


def experiment_get(workspace: Workspace, name: str) -> Experiment:
    experiment = workspace.experiments.filter(name=name).first()
    if experiment is None:
        raise Http404(EXPERIMENT_NOT_FOUND.format(name=name))
    return experiment


def run_get(workspace: Workspace, run_id: str) -> Run:
    run = (
        Run.objects.select_related("experiment", "cluster", "snapshot", "created_by", "workspace")
        .filter(workspace=workspace, run_id=run_id)
        .first()
    )
    if run is None:
        raise Http404(RUN_NOT_FOUND.format(run_id=run_id))
    return run


def runs_page(
    experiment: Experiment, *, status: str | None = None, before_id: int | None = None, limit: int = PAGE_SIZE
) -> list[Run]:
    """Newest first, by keyset (`before_id`), so page N costs the same as page 1."""
    runs = Run.objects.filter(experiment=experiment)
    if status:
        runs = runs.filter(status=status)
    if before_id:
        runs = runs.filter(id__lt=before_id)
    return list(runs.select_related("cluster", "created_by", "sweep", "parent").order_by("-id")[:limit])


def log_chunks_after(run: Run, after: int, *, stream: str | None = None, max_lines: int = 5000) -> list[LogChunk]:
    chunks = (
        LogChunk.objects.filter(run=run)
        .annotate(last_seq=F("first_seq") + F("line_count") - 1)
        .filter(last_seq__gt=after)
        .order_by("first_seq")
    )
    if stream:
        chunks = chunks.filter(stream=stream)
    found: list[LogChunk] = []
    lines = 0
    for chunk in chunks.iterator(chunk_size=50):
        found.append(chunk)
        lines += chunk.line_count
        if lines >= max_lines:
            break
    return found


def log_lines_after(run_pk: int, after: int, *, stream: str | None = None, limit: int = 200) -> list[tuple[int, str]]:
    """(first sequence number, text) of the next `limit` stored chunks after `after`, in order."""
    chunks = LogChunk.objects.filter(run_id=run_pk, first_seq__gt=after)
    if stream:
        chunks = chunks.filter(stream=stream)
    return list(chunks.order_by("first_seq").values_list("first_seq", "text")[:limit])


def snapshot_find(workspace: Workspace, sha256: str) -> Snapshot | None:
    return workspace.snapshots.filter(sha256=sha256).first()


def log_tail(run: Run, *, stream: str | None = None, max_lines: int = 2000) -> list[LogChunk]:
    chunks = LogChunk.objects.filter(run=run)
    if stream:
        chunks = chunks.filter(stream=stream)
    found, lines = [], 0
    for chunk in chunks.order_by("-first_seq").iterator(chunk_size=50):
        found.append(chunk)
        lines += chunk.line_count
        if lines >= max_lines:
            break
    return list(reversed(found))


def log_streams(run: Run) -> list[str]:
    return sorted(set(LogChunk.objects.filter(run=run).values_list("stream", flat=True)))


def run_files(run: Run) -> QuerySet[RunFile]:
    return run.files.order_by("path")


def run_file_get(run: Run, path: str) -> RunFile:
    found = run.files.filter(path=path).first()
    if found is None:
        raise Http404(FILE_NOT_FOUND.format(run_id=run.run_id, path=path))
    return found


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}{'es' if noun.endswith('s') else 's'}"


def launch_summary(run: Run, ranks_recorded: int) -> tuple[str, str]:
    """How the run's processes were laid out, in words: ("2 nodes × 2 processes", "PyTorch DDP
    (Gloo), per process"). A per-node launcher's ranks are counted from their records: the run
    itself only knows one launcher per node."""
    nodes = run.node_count
    kind = run.distributed.get("type")
    per_node = run.process_count_per_node
    if kind == "pytorch" and not run.distributed.get("process_count") and run.command:
        backend = str(run.distributed.get("communication_backend") or "Gloo")
        launched = ranks_recorded // nodes if ranks_recorded > nodes else None
        layout = f"{_count(nodes, 'node')} × " + (f"{_count(launched, 'process')}" if launched else "one launcher")
        return layout, f"PyTorch DDP ({backend}), per node: the command starts each node's processes"
    layout = f"{_count(nodes, 'node')} × {_count(per_node, 'process')}"
    if kind == "pytorch":
        backend = str(run.distributed.get("communication_backend") or "Gloo")
        return layout, f"PyTorch DDP ({backend}), per process"
    if kind == "mpi":
        return layout, "MPI: mpirun (Open MPI) starts every process"
    return layout, ""


def run_parameters(run: Run) -> dict[str, str]:
    """The run's parameters as people read them: its arguments taken as `--name value`, then its tags."""
    return {**(run.parameters or parameters_of(run.arguments)), **{str(k): str(v) for k, v in (run.tags or {}).items()}}


def differing_parameters(parameters: list[dict[str, str]]) -> list[str]:
    """Names whose value is not the same in every one of these runs (missing counts as a value)."""
    names = sorted({name for each in parameters for name in each})
    return [name for name in names if len({each.get(name) for each in parameters}) > 1]


def slurm_job_of(run: Run) -> SlurmJob | None:
    """The Slurm job of a run on a Slurm cluster, with what Slurm last said of it."""
    return SlurmJob.objects.filter(run=run).first()


def queued_node_demand(cluster: ComputeCluster) -> int:
    """The nodes the runs waiting for a cluster ask for (not yet placed)."""
    waiting = Run.objects.filter(cluster=cluster, status=RunStatus.QUEUED, dispatched_at__isnull=True)
    return waiting.aggregate(nodes=Sum("node_count"))["nodes"] or 0


def placement_node_names(run_pk: int) -> dict[int, str]:
    """node rank → the name of the node that holds it, for the run's gang."""
    return dict(RunNode.objects.filter(run_id=run_pk).values_list("node_rank", "node__name"))
