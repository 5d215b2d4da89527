"""Small builders for run tests: clusters, snapshots and runs made directly in the database."""

from __future__ import annotations

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from runs.models import Experiment, Run, RunStatus, RunStatusChange, Snapshot
from runs.parameters import parameters_of
from runs.run_values import run_values_sync
from runs.services import clear_run_keys
from trainhub.compute.models import ComputeCluster, Provisioner
from trainhub.workspaces.models import Workspace


def make_cluster(workspace: Workspace, name: str = "cpu", **extra) -> ComputeCluster:
    values = {"vm_size": "LOCAL_CPU", "min_nodes": 0, "max_nodes": 2, "provisioner": Provisioner.MANUAL}
    values.update(extra)
    return ComputeCluster.objects.create(workspace=workspace, name=name, **values)


def make_snapshot(workspace: Workspace, content: bytes = b"snapshot") -> Snapshot:
    sha = hashlib.sha256(content).hexdigest()
    name = f"snapshots/{sha}.tar.gz"
    if not default_storage.exists(name):
        default_storage.save(name, ContentFile(content))
    return Snapshot.objects.get_or_create(
        workspace=workspace, sha256=sha, defaults={"size": len(content), "storage_name": name}
    )[0]


def make_run(workspace: Workspace, cluster: ComputeCluster | None = None, experiment: str = "exp", **extra) -> Run:
    cluster = cluster or make_cluster(workspace, name=f"c{ComputeCluster.objects.count()}")
    exp, _ = Experiment.objects.get_or_create(workspace=workspace, name=experiment)
    exp.last_run_number += 1
    exp.save()
    values = {
        "status": RunStatus.QUEUED,
        "environment_name": "TrainHub-PyTorch-2.13-CPU",
        "environment_spec": {"python": "3.11", "pip": []},
        "script": "train.py",
    }
    values.update(extra)
    values.setdefault("parameters", parameters_of(values.get("arguments", [])))  # as run_submit does
    run = Run.objects.create(
        workspace=workspace,
        experiment=exp,
        number=exp.last_run_number,
        run_id=f"{experiment}_{exp.last_run_number}_{workspace.name}",
        cluster=cluster,
        snapshot=make_snapshot(workspace),
        **values,
    )
    run_values_sync(run)  # as run_submit does
    RunStatusChange.objects.create(run=run, status=run.status, at=run.created_at)
    # A rolled-back test frees its run's pk for the next test: drop what Redis kept under it.
    clear_run_keys(run.pk)
    return run
