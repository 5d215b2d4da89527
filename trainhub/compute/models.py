"""Compute clusters (named pools of nodes) and the nodes that heart-beat into them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trainhub.workspaces.models import Workspace, name_validator


class Provisioner(models.TextChoices):
    LOCAL = "local", "Local (TrainHub starts node processes on this machine)"
    MANUAL = "manual", "Manual (people start nodes on their machines)"
    SLURM = "slurm", "Slurm (a partition of an existing Slurm cluster)"
    # compute_target="local": each run executes on the machine that submitted it (runs/local_runs.py).
    SUBMITTER = "submitter", "The submitting machine (compute_target='local')"


class ComputeCluster(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=63, validators=[name_validator])
    vm_size = models.CharField(max_length=40)
    min_nodes = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=4)
    idle_seconds_before_scaledown = models.PositiveIntegerField(default=1800)
    provisioner = models.CharField(max_length=10, choices=Provisioner.choices, default=Provisioner.LOCAL)
    # A Slurm cluster's partition: Slurm allocates its runs' hosts there (trainhub/compute/slurm.py).
    slurm_partition = models.CharField(max_length=63, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="cluster_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.workspace.name}/{self.name}"

    @property
    def is_slurm(self) -> bool:
        return self.provisioner == Provisioner.SLURM

    @property
    def is_submitting_machine(self) -> bool:
        return self.provisioner == Provisioner.SUBMITTER


class NodeState(models.TextChoices):
    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    LOST = "lost", "Lost"


LIVE_NODE_STATES = (NodeState.IDLE, NodeState.BUSY)


class Node(models.Model):
    cluster = models.ForeignKey(ComputeCluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=120, unique=True)
    hostname = models.CharField(max_length=255)
    address = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    cpus = models.PositiveIntegerField()
    gpus = models.PositiveIntegerField(default=0)
    memory_gb = models.FloatField(default=0)
    docker = models.BooleanField(default=False)
    managed = models.BooleanField(default=False, help_text="Started by the local provisioner.")
    state = models.CharField(max_length=10, choices=NodeState.choices, default=NodeState.IDLE)
    state_reason = models.CharField(max_length=255, blank=True)
    current_run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(auto_now_add=True)
    idle_since = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cluster", "id"]
        indexes = [models.Index(fields=["cluster", "state"])]

    def __str__(self) -> str:
        return self.name
