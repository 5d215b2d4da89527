"""What the server gives Slurm for a run (options and script built from the run's numbers and the
site's settings, nothing a member wrote), and what it makes of a job Slurm no longer knows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from runs import scheduling, services, slurm
from runs.models import Run, RunStatus, SlurmJob
from tests.runs.builders import make_cluster, make_run
from trainhub.compute import slurm as compute_slurm
from trainhub.compute.services import node_register_slurm_host

pytestmark = pytest.mark.django_db

HOSTILE = "x'; touch /tmp/owned; echo '$(id)`id`\n#SBATCH --uid=0"


@pytest.fixture
def slurm_target(workspace):
    return make_cluster(workspace, name="hpc", provisioner="slurm", slurm_partition="debug", vm_size="STANDARD_NC12")


def test_a_runs_job_is_built_from_its_numbers_only(workspace, slurm_target):
    run = make_run(
        workspace,
        slurm_target,
        experiment="exp",
        script="",
        command=["python", HOSTILE],
        arguments=[HOSTILE],
        distributed={"type": "pytorch", "process_count": 4, "node_count": 2},
        node_count=2,
        process_count_per_node=2,
        timeout_seconds=90,
        tags={"t": HOSTILE},
        display_name=HOSTILE,
    )
    arguments = slurm.sbatch_arguments(run)
    assert arguments[:5] == [
        f"--job-name=trainhub-run-{run.pk}",
        "--partition=debug",
        "--nodes=2",
        "--ntasks-per-node=2",
        "--no-requeue",
    ]
    assert {"--export=NONE", "--cpus-per-task=1", "--gres=gpu:2", "--time=2"} <= set(arguments)
    script = slurm.job_script(run)
    for text in ("owned", "id`", "--uid", run.run_id):
        assert text not in script and all(text not in argument for argument in arguments)
    assert f"-m' 'runs.slurm_task' '{run.pk}'" in script


def test_a_per_node_launch_and_mpi_get_one_task_per_node(workspace, slurm_target):
    torchrun = make_run(
        workspace,
        slurm_target,
        script="",
        command=["torchrun", "x.py"],
        node_count=2,
        distributed={"type": "pytorch", "node_count": 2},
        process_count_per_node=1,
    )
    mpi = make_run(
        workspace, slurm_target, distributed={"type": "mpi", "node_count": 2}, node_count=2, process_count_per_node=4
    )
    assert {"--ntasks-per-node=1", "--cpus-per-task=1"} <= set(slurm.sbatch_arguments(torchrun))
    # mpirun starts the host's four ranks in its one task: the task holds four CPUs.
    assert {"--ntasks-per-node=1", "--cpus-per-task=4"} <= set(slurm.sbatch_arguments(mpi))
    assert "'--ntasks-per-node=1' '--cpus-per-task=4'" in slurm.job_script(mpi)


def test_a_slurm_host_that_joins_its_run_late_is_not_taken_for_a_lost_node_job(workspace, slurm_target):
    """A Slurm run has no job in Redis (Slurm holds it): a host whose task has joined the run but
    not started preparing, while the other host has, is no lost dispatch, however long Slurm held
    the job pending."""
    run = make_run(
        workspace,
        slurm_target,
        status=RunStatus.PREPARING,
        dispatched_at=timezone.now() - timedelta(minutes=5),
        node_count=2,
    )
    for node_rank, host in enumerate(("n1", "n2")):
        node = node_register_slurm_host(
            cluster=slurm_target, host=host, address="127.0.0.1", docker=False, run_id=run.pk
        )
        services.placement_join(run=run, node=node, node_rank=node_rank)
    services.placement_preparing(run.pk, 1, lead=False)
    assert scheduling.redispatch_lost_jobs() == []
    run = Run.objects.get(pk=run.pk)
    assert (run.status, run.status_reason) == (RunStatus.PREPARING, "")
    assert run.dispatched_at is not None


def test_a_job_slurm_no_longer_knows_fails_its_run(slurm_cluster, workspace, slurm_target):
    run = make_run(workspace, slurm_target, status=RunStatus.RUNNING, dispatched_at=timezone.now())
    # A job id this Slurm never handed out (its ids start at 1).
    SlurmJob.objects.create(run=run, job_id="999999", state="RUNNING", submitted_at=timezone.now())
    assert slurm.watch_jobs() == []  # missing once: squeue may not list a job it just started
    SlurmJob.objects.filter(run=run).update(gone_since=timezone.now() - timedelta(seconds=10))
    assert slurm.watch_jobs() == [run.pk]
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.FAILED
    assert run.status_reason == slurm.JOB_FORGOTTEN.format(job_id="999999")


def test_a_partition_name_never_reaches_slurm_unchecked(workspace):
    cluster = make_cluster(workspace, name="bad", provisioner="slurm", slurm_partition="debug --uid=0")
    run = make_run(workspace, cluster)
    with pytest.raises(ValueError, match="A Slurm partition is named with letters"):
        slurm.sbatch_arguments(run)


def test_a_job_sbatch_gave_no_answer_for_is_taken_up_not_submitted_twice(slurm_cluster, workspace):
    """sbatch submitted the job but its answer never came (Slurm's controller answered too late, or
    the controller process died meanwhile): once the grace has passed, the run takes up the job
    Slurm holds under its name instead of a second one."""
    cpus = make_cluster(workspace, name="hpc-cpu", provisioner="slurm", slurm_partition="debug")
    run = make_run(workspace, cpus, dispatched_at=timezone.now() - slurm.SUBMIT_GRACE * 2)
    SlurmJob.objects.create(run=run, job_id="")
    Path(settings.TRAINHUB_SLURM_JOB_LOG_DIR).mkdir(parents=True, exist_ok=True)
    job_id = compute_slurm.submit(slurm.sbatch_arguments(run), "#!/bin/sh\nsleep 60\n")  # its answer lost
    try:
        assert slurm.watch_jobs() == []
        job = SlurmJob.objects.get(run=run)
        assert (job.job_id, job.state) == (job_id, slurm.SLURM_PENDING)
        assert compute_slurm.job_ids_named([slurm.job_name(run)]) == {slurm.job_name(run): job_id}
        assert len(compute_slurm.command("squeue", "--noheader", f"--name={slurm.job_name(run)}").splitlines()) == 1
        assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    finally:
        compute_slurm.cancel(job_id)
