"""Endpoints (deployed models answering over HTTP) and their replicas, each a long-lived run."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trainhub.workspaces.models import Workspace, name_validator


class EndpointState(models.TextChoices):
    TRANSITIONING = "Transitioning"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    FAILED = "Failed"


class Endpoint(models.Model):
    """What to serve (models, scoring script, environment) and where; replicas come and go."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=100, validators=[name_validator])
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=EndpointState.choices, default=EndpointState.TRANSITIONING)
    error = models.TextField(blank=True)
    cluster = models.ForeignKey("compute.ComputeCluster", on_delete=models.PROTECT, related_name="endpoints")
    model_versions = models.ManyToManyField("registry.ModelVersion", related_name="endpoints")
    snapshot = models.ForeignKey("runs.Snapshot", on_delete=models.PROTECT, related_name="+")
    # Empty: an ONNX version served by onnxruntime with no script.
    entry_script = models.CharField(max_length=1000, blank=True)
    environment_name = models.CharField(max_length=255)
    environment_version = models.PositiveIntegerField(null=True, blank=True)
    environment_spec = models.JSONField()
    deployment_config = models.JSONField(default=dict, blank=True)
    # Bumped by each update: a replica of an older generation is replaced once a new one answers.
    generation = models.PositiveIntegerField(default=1)
    restarts = models.PositiveIntegerField(default=0)
    # How many replicas serve it at once (AksWebservice's num_replicas, or replicas=).
    replica_count = models.PositiveIntegerField(default=1)
    # False only when the deployment said auth_enabled=False: anyone reaching the server may score.
    auth_enabled = models.BooleanField(default=True)
    primary_key_hash = models.CharField(max_length=64)
    secondary_key_hash = models.CharField(max_length=64)
    # The keys themselves, encrypted with a key derived from the server's secret key
    # (endpoints/keys.py): what get_keys() gives contributors and owners. Empty: not kept.
    primary_key_sealed = models.TextField(blank=True)
    secondary_key_sealed = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="endpoint_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ReplicaState(models.TextChoices):
    STARTING = "starting"
    READY = "ready"
    # Replaced by a newer generation or deleted: no new requests, stopped once the switch is done.
    RETIRED = "retired"
    STOPPED = "stopped"


class Replica(models.Model):
    """One scoring process of an endpoint: a run of the experiment `endpoint-<name>`."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="replicas")
    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="replica")
    generation = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=ReplicaState.choices, default=ReplicaState.STARTING)
    address = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    # Sent by the server with every request: the replica answers nothing else on its port.
    secret = models.CharField(max_length=64, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.endpoint}: replica {self.pk}"
