"""Runs on a Slurm cluster: each run is one Slurm job, which Slurm allocates, gang-schedules and
ends; its one task per allocated host runs TrainHub's node-side execution there (runs/slurm_task.py).

The server only submits, watches and cancels: while Slurm holds a job pending the run stays Queued
with Slurm's reason; a job that ends before its run did (time limit, node failure, scancel) or that
Slurm no longer knows fails the run with that reason; a task that stops heartbeating (its host died or
hangs) fails the run naming the host, and its job is scancelled, as does a host whose task has not
beaten some seconds after Slurm allocated it (it died before its task started). A job Slurm still runs
after its run ended (the scancel found Slurm not answering) is scancelled again until Slurm shows it
ended. All of it, sbatch included, runs in the controller's Slurm thread (runs/controller.py): a Slurm
command waits up to 20 s for a slurmctld that is down, and nothing else waits with it."""

from __future__ import annotations

import logging
import math
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import services
from runs.launch_plan import LaunchMode, launch_mode
from runs.models import ACTIVE_STATUSES, FINAL_STATUSES, PlacementState, Run, RunNode, RunStatus, SlurmJob
from runs.tokens import run_token
from trainhub import redis_keys
from trainhub.compute import catalog, slurm
from trainhub.compute.models import ComputeCluster, Node
from trainhub.redis_conn import get_redis, wake
from trainhub.workspaces.selectors import hash_token

logger = logging.getLogger(__name__)

# squeue may not list a job in the instant after sbatch returned, nor one whose end it is still
# writing: a job missing this long is one Slurm has forgotten.
MISSING_GRACE = timedelta(seconds=3)
# A run whose sbatch got no answer (Slurm's controller down) or never came back (the submitting
# process died) is looked for by its job's name once sbatch can no longer be at it and squeue lists
# what it did: taken up if Slurm holds its job, submitted again otherwise (it waits Queued meanwhile).
SUBMIT_GRACE = timedelta(seconds=slurm.COMMAND_SECONDS) + MISSING_GRACE
# A job that ended while its run is still active: its tasks get this long to record the end themselves.
ENDED_GRACE = timedelta(seconds=2)
# A run's tasks end themselves as their run ends: a job Slurm still runs this long after, not ending
# (a task hung on its host, and the scancel when the run failed found Slurm not answering), is
# scancelled again at each controller pass until squeue shows it ended.
LEFTOVER_GRACE = timedelta(seconds=5)
# SlurmJob.state of an ended run's job that squeue no longer lists.
SLURM_GONE = "GONE"
# A job in one of these states holds nothing more of Slurm's: it is not asked about again.
LEFT_STATES = slurm.ENDED_STATES | {SLURM_GONE}
# Each task of a Slurm run sets its key (redis_keys.run_task_alive) every TASK_HEARTBEAT_SECONDS
# from a thread that does nothing else; the controller fails the run of a task whose key expired,
# TASK_SILENCE_SECONDS after its last beat: its host died or hangs. Slurm's own verdict on a dead host
# waits for SlurmdTimeout (300 s by default). Eight beats may be missed: a healthy task would have to
# get no CPU for 7 s in a row to be judged lost, where such a thread beside a busy main thread, at a
# load of 19 to 21 on 2 cores, was at most 0.14 s late in 90 s (measured by hand); and with the
# controller looking once a second, a dead host's run still fails within about 10 s of its death.
TASK_HEARTBEAT_SECONDS = 1.0
TASK_SILENCE_SECONDS = 8
TASK_LOST = (
    "Slurm node {hosts} failed: the run's task there stopped reporting (no heartbeat for {seconds} s); "
    "TrainHub cancels Slurm job {job_id} so that every rank stops."
)
TASK_NEVER_BEAT = (
    "Slurm node {hosts} failed: the run's task there never reported (no heartbeat {seconds} s after Slurm "
    "allocated it); TrainHub cancels Slurm job {job_id} so that every rank stops."
)
# Slurm's name for a job waiting for its allocation (squeue's state; SlurmJob.state holds Slurm's words).
SLURM_PENDING = "PENDING"
SBATCH_FAILED = "Slurm refused the run's job: {error}"
JOB_FORGOTTEN = "Slurm no longer knows the run's job {job_id}: the run was failed rather than left running."
SBATCH_UNANSWERED = (
    "Slurm's controller did not answer sbatch ({error}): the run stays queued, and its job is submitted once "
    "Slurm answers."
)
SLURM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What Slurm's end of a job means for its run.
END_REASONS = {
    "TIMEOUT": "Slurm time limit{limit} reached: Slurm stopped job {job_id} ({reason}).",
    "NODE_FAIL": "Slurm job {job_id} failed: node {nodes} failed ({reason}).",
    "BOOT_FAIL": "Slurm job {job_id} failed: node {nodes} did not boot ({reason}).",
    "OUT_OF_MEMORY": "Slurm job {job_id} ran out of memory on {nodes}.",
    "PREEMPTED": "Slurm preempted job {job_id} ({reason}).",
    "DEADLINE": "Slurm job {job_id} passed its deadline ({reason}).",
    "CANCELLED": "Slurm job {job_id} was cancelled in Slurm (scancel).",
}
ENDED_OTHERWISE = "Slurm job {job_id} ended ({state}, {reason}) before the run did."


def job_name(run: Run) -> str:
    return f"trainhub-run-{run.pk}"


def per_node_tasks(run: Run) -> int:
    """Slurm tasks per node of the allocation: one per rank for a per-process launch, one per node
    for a per-node launcher and for MPI (mpirun or the launcher starts the node's ranks)."""
    per_process = launch_mode(run.command, run.distributed or {}) is LaunchMode.PER_PROCESS
    return run.process_count_per_node if per_process else 1


def cpus_per_task(run: Run) -> int:
    """CPUs each Slurm task holds: one per rank, so a per-node or MPI task, which stands for all its
    host's ranks (mpirun starts them), holds the host's share of the run's CPUs."""
    return max(1, run.process_count_per_node // per_node_tasks(run))


def gpus_per_node(run: Run) -> int:
    size = catalog.get_size(run.cluster.vm_size)
    return size.gpus if size else 0


def sbatch_arguments(run: Run) -> list[str]:
    """The job's options, every one built here from the run's numbers and the site's settings."""
    tasks = per_node_tasks(run)
    arguments = [
        f"--job-name={job_name(run)}",
        f"--partition={slurm.check_partition(run.cluster.slurm_partition)}",
        f"--nodes={run.node_count}",
        f"--ntasks-per-node={tasks}",
        # One attempt per run: a requeued job would run the run's code a second time.
        "--no-requeue",
        # None of the server's variables (its credentials) go into Slurm: the hosts have their own.
        "--export=NONE",
        f"--output={Path(settings.TRAINHUB_SLURM_JOB_LOG_DIR) / job_name(run)}-%j.out",
        f"--chdir={settings.TRAINHUB_SLURM_NODE_DIR}",
        f"--cpus-per-task={cpus_per_task(run)}",
    ]
    gpus = gpus_per_node(run)
    if gpus:
        arguments.append(f"--gres=gpu:{gpus}")
    if run.timeout_seconds:
        # Slurm counts whole minutes; the node stops the run at its own limit to the second first.
        arguments.append(f"--time={max(1, math.ceil(run.timeout_seconds / 60))}")
    return arguments


def job_script(run: Run) -> str:
    """One TrainHub task per allocated host, holding the host's share of the run's CPUs."""
    task = [settings.TRAINHUB_SLURM_NODE_PYTHON, "-m", "runs.slurm_task", str(run.pk)]
    if settings.TRAINHUB_SLURM_NODE_ENV_FILE:
        task += ["--env-file", settings.TRAINHUB_SLURM_NODE_ENV_FILE]
    srun = [
        "srun",
        f"--ntasks={run.node_count}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={per_node_tasks(run) * cpus_per_task(run)}",
        "--kill-on-bad-exit=1",
        "--export=NONE",
        f"--chdir={settings.TRAINHUB_SLURM_NODE_DIR}",
        *task,
    ]
    return "\n".join(
        [
            "#!/bin/sh",
            f"# TrainHub run {run.pk}: one task per allocated host runs its share of the run.",
            f"export PATH={SLURM_PATH}",
            "exec " + " ".join(_quoted(part) for part in srun),
            "",
        ]
    )


def _quoted(part: str) -> str:
    """Site settings and numbers only reach the script; quoted all the same."""
    return "'" + part.replace("'", "'\"'\"'") + "'"


def wake_slurm_thread() -> None:
    """The controller's Slurm thread submits now rather than at its next pass: a run was queued on a
    Slurm cluster (runs.scheduling.dispatch_cluster)."""
    wake(redis_keys.slurm_wake())


def submit_all_queued_runs() -> list[int]:
    """Hand the queued runs of every Slurm cluster to Slurm; the ids of the runs submitted."""
    cluster_pks = (
        Run.objects.filter(status=RunStatus.QUEUED, dispatched_at__isnull=True, cluster__provisioner="slurm")
        .values_list("cluster_id", flat=True)
        .distinct()
    )
    submitted: list[int] = []
    for cluster in ComputeCluster.objects.filter(pk__in=list(cluster_pks)):
        submitted += submit_queued_runs(cluster)
    return submitted


def submit_queued_runs(cluster: ComputeCluster) -> list[int]:
    """Hand every queued run of the cluster to Slurm, in submission order; Slurm decides when and
    where each runs. Returns the ids of the runs submitted."""
    submitted: list[int] = []
    while True:
        run_pk = _take_next(cluster.pk)
        if run_pk is None:
            return submitted
        if not _submit(run_pk):
            return submitted  # Slurm does not answer: the next runs wait with this one
        submitted.append(run_pk)


@transaction.atomic
def _take_next(cluster_pk: int) -> int | None:
    run = (
        Run.objects.select_for_update()
        .filter(cluster_id=cluster_pk, status=RunStatus.QUEUED, dispatched_at__isnull=True)
        .order_by("id")
        .first()
    )
    if run is None:
        return None
    run.dispatched_at = timezone.now()
    run.token_salt = secrets.token_hex(16)
    run.token_hash = hash_token(run_token(run.pk, run.token_salt))
    run.save(update_fields=["dispatched_at", "token_salt", "token_hash"])
    SlurmJob.objects.update_or_create(run=run, defaults={"job_id": "", "state": "", "reason": ""})
    return run.pk


def _submit(run_pk: int) -> bool:
    """sbatch the run's job; False when Slurm's controller did not answer (the run stays Queued,
    saying so, and its job is looked for and submitted again later: `_follow_jobs`)."""
    run = Run.objects.select_related("cluster").get(pk=run_pk)
    services.clear_dispatch_keys(run.pk)
    Path(settings.TRAINHUB_SLURM_JOB_LOG_DIR).mkdir(parents=True, exist_ok=True)
    try:
        job_id = slurm.submit(sbatch_arguments(run), job_script(run))
    except slurm.SlurmUnreachable as error:
        logger.warning("run %s: sbatch got no answer from Slurm: %s", run.run_id, error)
        SlurmJob.objects.filter(run=run, job_id="").update(reason=SBATCH_UNANSWERED.format(error=error))
        return False
    except (slurm.SlurmError, ValueError) as error:
        services.fail_run(run.pk, SBATCH_FAILED.format(error=error))
        return True
    _submitted(run, job_id)
    return True


def _submitted(run: Run, job_id: str) -> None:
    SlurmJob.objects.filter(run=run).update(job_id=job_id, state=SLURM_PENDING, reason="", submitted_at=timezone.now())
    logger.info("run %s is Slurm job %s", run.run_id, job_id)
    run.refresh_from_db(fields=["status"])
    if run.is_final:
        # Canceled while sbatch was answering: its job must not run.
        cancel(run)


def _submit_again(jobs: list[SlurmJob], now) -> None:
    """The runs whose sbatch got no answer, or never came back, once SUBMIT_GRACE has passed: each
    takes up the job Slurm holds under its name, if any (sbatch did submit it), and is submitted
    again otherwise; while Slurm does not answer they wait."""
    due = [job for job in jobs if job.run.dispatched_at and now - job.run.dispatched_at > SUBMIT_GRACE]
    if not due:
        return
    try:
        held = slurm.job_ids_named([job_name(job.run) for job in due])
    except slurm.SlurmError as error:
        logger.warning("squeue failed: %s", error)
        return
    for job in due:
        job_id = held.get(job_name(job.run))
        if job_id is not None:
            logger.info("run %s: Slurm holds its job %s, which sbatch did not answer with", job.run.run_id, job_id)
            _submitted(job.run, job_id)
        elif not _submit(job.run_id):
            return


def cancel(run: Run) -> None:
    """scancel the job of a run of a Slurm cluster. A run no task of which started ends here; the tasks
    of a started one end it themselves (they stop their ranks as the run's abort key appears, or as
    Slurm signals them)."""
    if not run.cluster.is_slurm:
        return
    job = SlurmJob.objects.filter(run=run).first()
    if job is not None and job.job_id:
        try:
            slurm.cancel(job.job_id)
        except slurm.SlurmError as error:
            logger.warning("scancel of run %s's job %s failed: %s", run.run_id, job.job_id, error)
    run.refresh_from_db(fields=["status"])
    if run.status == RunStatus.QUEUED:
        services.run_transition(run.pk, RunStatus.CANCELED, reason="Canceled while Slurm held it pending.")


def watch_jobs() -> list[int]:
    """Bring the runs of Slurm jobs up to date with what squeue says, and scancel the jobs Slurm
    still runs for ended runs, with one squeue for both; returns the runs it ended."""
    active = list(
        SlurmJob.objects.filter(run__status__in=ACTIVE_STATUSES, run__cluster__provisioner="slurm").select_related(
            "run"
        )
    )
    leftover = list(
        SlurmJob.objects.filter(run__status__in=FINAL_STATUSES, run__cluster__provisioner="slurm")
        .exclude(job_id="")
        .exclude(state__in=LEFT_STATES)
        .select_related("run")
    )
    if not active and not leftover:
        return []
    states = _squeue(active + leftover)
    if states is None:
        return []
    now = timezone.now()
    ended = _follow_jobs(active, states, now)
    _reap_leftover_jobs(leftover, states, now)
    return ended


def _follow_jobs(jobs: list[SlurmJob], states: dict[str, slurm.JobState], now) -> list[int]:
    """The active runs' jobs: Slurm's state and reason recorded, a run ended as its job did; returns
    the runs ended."""
    ended = []
    _submit_again([job for job in jobs if not job.job_id and job.submitted_at is None], now)
    for job in jobs:
        if not job.job_id:
            continue
        state = states.get(job.job_id)
        if state is None:
            if job.gone_since is None:
                SlurmJob.objects.filter(pk=job.pk).update(gone_since=now)
            elif now - job.gone_since > MISSING_GRACE:
                services.fail_run(job.run_id, JOB_FORGOTTEN.format(job_id=job.job_id))
                ended.append(job.run_id)
            continue
        # A completing job lists only the nodes still completing: the allocation is kept as it was.
        nodes = job.nodes if state.state == "COMPLETING" and job.nodes else state.nodes
        if (state.state, state.reason, nodes) != (job.state, job.reason, job.nodes):
            SlurmJob.objects.filter(pk=job.pk).update(state=state.state, reason=state.reason, nodes=nodes)
            if state.state == SLURM_PENDING and state.reason != job.reason:
                _say_pending(job.run_id, state)
        if not state.ended:
            if job.gone_since is not None:
                SlurmJob.objects.filter(pk=job.pk).update(gone_since=None)
            if state.state == "RUNNING" and _fail_unbeaten(job, state, now):
                ended.append(job.run_id)
            continue
        if _end_run(job, state, now):
            ended.append(job.run_id)
    return ended


def _fail_unbeaten(job: SlurmJob, state: slurm.JobState, now) -> bool:
    """Fail the run of a running job whose task on some allocated host has not beaten (nor joined
    the run) TASK_SILENCE_SECONDS after squeue first said the job runs, naming the host(s), and
    scancel the job: the host died (or hangs) between Slurm's allocation and its task's start, which
    Slurm would tell only after SlurmdTimeout (NODE_FAIL). True when it failed the run."""
    if job.allocated_at is None:
        SlurmJob.objects.filter(pk=job.pk).update(allocated_at=now)
        return False
    if now - job.allocated_at < timedelta(seconds=TASK_SILENCE_SECONDS):
        return False
    joined = set(RunNode.objects.filter(run_id=job.run_id).values_list("node_rank", flat=True))
    waiting = [rank for rank in range(job.run.node_count) if rank not in joined]
    if not waiting:
        return False
    pipe = get_redis().pipeline(transaction=False)
    for rank in waiting:
        pipe.exists(redis_keys.run_task_alive(job.run_id, rank))
    silent = [rank for rank, alive in zip(waiting, pipe.execute(), strict=True) if not alive]
    if not silent:
        return False
    try:
        allocation = slurm.hostnames(state.nodes)
    except slurm.SlurmError:
        allocation = []
    hosts = [allocation[rank] if rank < len(allocation) else f"{rank} of {state.nodes}" for rank in silent]
    reason = TASK_NEVER_BEAT.format(hosts=", ".join(hosts), seconds=TASK_SILENCE_SECONDS, job_id=job.job_id)
    if services.fail_run(job.run_id, reason) is None:
        return False
    logger.warning("run %s: the Slurm task on %s never beat", job.run_id, ", ".join(hosts))
    try:
        slurm.cancel(job.job_id)
    except slurm.SlurmError as error:
        logger.warning("scancel of job %s of run %s failed: %s", job.job_id, job.run_id, error)
    return True


def _squeue(jobs: list[SlurmJob]) -> dict[str, slurm.JobState] | None:
    """What squeue says of these jobs (those submitted); None when Slurm does not answer, which is
    not a job forgotten: their runs wait for its next answer."""
    try:
        return slurm.jobs([job.job_id for job in jobs if job.job_id])
    except slurm.SlurmError as error:
        logger.warning("squeue failed: %s", error)
        return None


def _reap_leftover_jobs(jobs: list[SlurmJob], states: dict[str, slurm.JobState], now) -> list[str]:
    """scancel the job of each ended run that Slurm still holds past LEFTOVER_GRACE; a job squeue
    shows ended, or no longer lists, is recorded so and not asked about again. Returns the jobs
    scancelled."""
    cancelled = []
    for job in jobs:
        state = states.get(job.job_id)
        if state is None or state.ended:
            SlurmJob.objects.filter(pk=job.pk).update(state=state.verdict if state else SLURM_GONE)
            continue
        ended_at = job.run.ended_at or now
        if state.state == "COMPLETING" or (state.state != SLURM_PENDING and now - ended_at < LEFTOVER_GRACE):
            continue
        try:
            slurm.cancel(job.job_id)
        except slurm.SlurmError as error:
            logger.warning("scancel of job %s of ended run %s failed: %s", job.job_id, job.run.run_id, error)
            continue
        logger.warning(
            "job %s of run %s was still %s after the run ended: scancelled", job.job_id, job.run.run_id, state.state
        )
        cancelled.append(job.job_id)
    return cancelled


def watch_tasks() -> list[int]:
    """Fail each active Slurm run one of whose tasks stopped beating, naming the task's host, and
    scancel its job so that the ranks on its other hosts stop too; returns the runs it failed. A task
    done with its share (PlacementState.DONE) stops beating and is not watched any more."""
    placements = list(
        RunNode.objects.filter(run__status__in=ACTIVE_STATUSES, run__cluster__provisioner="slurm")
        .exclude(state=PlacementState.DONE)
        .select_related("node")
        .order_by("run_id", "node_rank")
    )
    if not placements:
        return []
    pipe = get_redis().pipeline(transaction=False)
    for placement in placements:
        pipe.exists(redis_keys.run_task_alive(placement.run_id, placement.node_rank))
    silent: dict[int, list[str]] = {}
    for placement, alive in zip(placements, pipe.execute(), strict=True):
        if not alive:
            silent.setdefault(placement.run_id, []).append(slurm_host(placement.node))
    failed = []
    for run_pk, hosts in silent.items():
        job_id = SlurmJob.objects.filter(run_id=run_pk).values_list("job_id", flat=True).first() or ""
        reason = TASK_LOST.format(hosts=", ".join(hosts), seconds=TASK_SILENCE_SECONDS, job_id=job_id or "?")
        if services.fail_run(run_pk, reason) is None:
            continue
        failed.append(run_pk)
        logger.warning("run %s: the Slurm task on %s stopped beating", run_pk, ", ".join(hosts))
        if job_id:
            try:
                slurm.cancel(job_id)
            except slurm.SlurmError as error:
                logger.warning("scancel of job %s of run %s failed: %s", job_id, run_pk, error)
    return failed


def slurm_host(node: Node) -> str:
    """The Slurm host a Slurm cluster's node row stands for (compute.services.node_register_slurm_host)."""
    return node.name.removeprefix(f"slurm-{node.cluster_id}-")


def _say_pending(run_pk: int, state: slurm.JobState) -> None:
    services.log_append(run_pk, services.SUBMIT_STREAM, [f"Slurm job {state.job_id} is pending: {state.reason}"])


def end_reason(state: slurm.JobState, allocation: str = "") -> str:
    """Why Slurm ended the job, in words; a node failure names the node(s) of the job's allocation
    that Slurm has down (squeue lists a completing job's remaining nodes only: the caller passes the
    allocation when it knows it)."""
    allocation = allocation or state.nodes
    nodes = allocation or "?"
    if state.verdict in ("NODE_FAIL", "BOOT_FAIL"):
        try:
            nodes = ", ".join(slurm.failed_nodes(allocation)) or f"of {nodes}"
        except slurm.SlurmError:
            nodes = f"of {nodes}"
    limit = slurm.time_limit_words(state.time_limit)
    template = END_REASONS.get(state.verdict, ENDED_OTHERWISE)
    return template.format(
        job_id=state.job_id,
        state=state.state,
        reason=state.reason,
        nodes=nodes,
        limit=f" of {limit}" if limit else "",
    )


def _end_run(job: SlurmJob, state: slurm.JobState, now) -> bool:
    """A job Slurm ended while its run is active: the run ends with Slurm's reason. When the job
    simply ended (its tasks exited), they may still be recording the run's end: ENDED_GRACE first."""
    run = Run.objects.get(pk=job.run_id)
    if run.is_final:
        return False
    if state.verdict not in END_REASONS:
        if job.gone_since is None:
            SlurmJob.objects.filter(pk=job.pk).update(gone_since=now)
            return False
        if now - job.gone_since < ENDED_GRACE:
            return False
    if state.verdict == "CANCELLED" and run.cancel_requested_at:
        services.run_transition(run.pk, RunStatus.CANCELED, reason=run.cancel_reason or services.CANCELED_BY_USER)
    else:
        services.fail_run(run.pk, end_reason(state, allocation=job.nodes))
    return True
