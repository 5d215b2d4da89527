"""Experiments, runs, their snapshots, status history, per-node placement, logs and files."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from runs.expressions import SecondsBetween
from runs.parameters import PARAM, TABLE_KEY_LENGTH, TAG, TEXT_LENGTH
from trainhub.workspaces.models import Workspace, name_validator


class RunStatus(models.TextChoices):
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"


FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
ACTIVE_STATUSES = frozenset(set(RunStatus) - FINAL_STATUSES)


class PlacementState(models.TextChoices):
    """Where a node of a run's gang is with its share: placed, preparing or running it, done."""

    ASSIGNED = "assigned", "Assigned"
    PREPARING = "preparing", "Preparing"
    DONE = "done", "Done"


class ProcessState(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    # Ended by TrainHub: another rank failed, the run was canceled, or its node stopped.
    STOPPED = "stopped", "Stopped"


class Experiment(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=100, validators=[name_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    last_run_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="experiment_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Snapshot(models.Model):
    """A packed source directory, stored once per content hash; a row per workspace that sent it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="snapshots")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    file_count = models.PositiveIntegerField(default=0)
    files = models.JSONField(default=list, blank=True, help_text="[[path, size], …] as packed.")
    storage_name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "sha256"], name="snapshot_per_workspace")]

    def __str__(self) -> str:
        return self.sha256[:12]


class Run(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runs")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    run_id = models.CharField(max_length=120, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    status_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Why the run was canceled when it was not its user (a sweep's early termination): the reason
    # its end shows instead of "Canceled by the user."
    cancel_reason = models.CharField(max_length=500, blank=True)
    # A sweep's children point at the sweep's own run (sweeps.models.Sweep.parent).
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")

    cluster = models.ForeignKey("compute.ComputeCluster", on_delete=models.PROTECT, related_name="runs")
    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, related_name="runs")
    environment_name = models.CharField(max_length=255)
    environment_version = models.PositiveIntegerField(null=True, blank=True)
    environment_spec = models.JSONField()
    script = models.CharField(max_length=1000, blank=True)
    command = models.JSONField(default=list, blank=True)
    arguments = models.JSONField(default=list, blank=True)
    # The arguments read as `--name value` (runs/parameters.py), kept so run tables filter on them.
    parameters = models.JSONField(default=dict, blank=True)
    distributed = models.JSONField(default=dict, blank=True)
    node_count = models.PositiveIntegerField(default=1)
    process_count_per_node = models.PositiveIntegerField(default=1)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    # What each node holds the run's processes to (runs/limits.py): {"cpu_cores": 2, "memory_gb": 1.5}.
    limits = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    properties = models.JSONField(default=dict, blank=True)

    exit_code = models.IntegerField(null=True, blank=True)
    failed_rank = models.IntegerField(null=True, blank=True)
    error_traceback = models.TextField(blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    token_hash = models.CharField(max_length=64, blank=True)
    # Made at each dispatch: every node of the run derives the run's token from it and the secret
    # key (runs.tokens.run_token), so the token itself is never stored or queued.
    token_salt = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "number"], name="run_number_per_experiment")]
        indexes = [
            models.Index(fields=["experiment", "-id"], name="run_experiment_recent"),
            models.Index(fields=["experiment", "status", "-id"], name="run_experiment_status"),
            models.Index(fields=["cluster", "status", "id"], name="run_cluster_queue"),
            models.Index(fields=["workspace", "-id"], name="run_workspace_recent"),
            # The runs table's sorts by a run's own column walk these from a page's cursor.
            *(
                models.Index(fields=[scope, column, "id"], name=f"run_{scope}_{column}_id")
                for scope in ("workspace", "experiment")
                for column in ("started_at", "status", "display_name", "created_by")
            ),
            *(
                models.Index(F(scope), SecondsBetween("ended_at", "started_at"), F("id"), name=f"run_{scope}_duration")
                for scope in ("workspace", "experiment")
            ),
        ]

    def __str__(self) -> str:
        return self.run_id

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.ended_at or timezone.now()) - self.started_at).total_seconds()


class RunValue(models.Model):
    """What a run's `params.<key>` or `tags.<key>` column shows, one row per cell, kept in step with
    the run's parameters and tags (runs/run_values.py): the runs table sorts and filters through
    these rows' indexes instead of reading the JSON of every run of the scope (~0.9 s at 100,000)."""

    KINDS = [(PARAM, "Parameter"), (TAG, "Tag")]

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="table_values")
    # The run's, so that a scope's values sort through one index range (as metrics.MetricSeries).
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=5, choices=KINDS)
    key = models.CharField(max_length=TABLE_KEY_LENGTH)
    value = models.TextField()
    # The value when it writes a number: numbers sort as numbers, before the values that are not.
    number = models.FloatField(null=True, blank=True)
    # The value's first characters, which a sort of the values that are not numbers walks: an index
    # entry holding a whole 5,000-character tag would pass PostgreSQL's size limit.
    text = models.CharField(max_length=TEXT_LENGTH, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "kind", "key"], name="one_value_per_run_column")]
        indexes = [
            *(
                models.Index(
                    fields=[scope, "kind", "key", "number", "run"],
                    name=f"run_value_{scope}_number",
                    condition=Q(number__isnull=False),
                )
                for scope in ("workspace", "experiment")
            ),
            *(
                models.Index(
                    fields=[scope, "kind", "key", "text", "run"],
                    name=f"run_value_{scope}_text",
                    condition=Q(number__isnull=True),
                )
                for scope in ("workspace", "experiment")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.kind}s.{self.key}"


class RunStatusChange(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="status_changes")
    status = models.CharField(max_length=12, choices=RunStatus.choices)
    at = models.DateTimeField()
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.status}"


class RunNode(models.Model):
    """One node of a run's gang, with the rank it holds among the run's nodes."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="run_nodes")
    node = models.ForeignKey("compute.Node", on_delete=models.PROTECT, related_name="run_nodes")
    node_rank = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=PlacementState.choices, default=PlacementState.ASSIGNED)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "node_rank"], name="one_node_per_rank"),
        ]
        ordering = ["node_rank"]

    def __str__(self) -> str:
        return f"{self.run_id}: node rank {self.node_rank}"


class SlurmJob(models.Model):
    """The Slurm job of a run on a Slurm cluster, and what Slurm last said of it."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="slurm_job")
    job_id = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=20, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    nodes = models.CharField(max_length=1000, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # When squeue first said the job is gone (missing from its answer, or ended while the run is
    # still active): the run is failed if that lasts.
    gone_since = models.DateTimeField(null=True, blank=True)
    # When squeue first said the job is running (Slurm allocated its hosts): each host's task must
    # beat within runs.slurm.TASK_SILENCE_SECONDS of it.
    allocated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.run_id}: Slurm job {self.job_id or '(not submitted)'}"


class RunProcess(models.Model):
    """One process (rank) of a run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="processes")
    rank = models.PositiveIntegerField()
    node_rank = models.PositiveIntegerField(default=0)
    local_rank = models.PositiveIntegerField(default=0)
    node_name = models.CharField(max_length=120)
    pid = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=ProcessState.choices, default=ProcessState.RUNNING)
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "rank"], name="one_process_per_rank")]
        ordering = ["rank"]

    def __str__(self) -> str:
        return f"{self.run_id}: rank {self.rank}"


class LogChunk(models.Model):
    """A batch of log lines of one stream, numbered within the run (seq first_seq, first_seq+1, …)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_chunks")
    stream = models.CharField(max_length=64)
    first_seq = models.BigIntegerField()
    line_count = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        indexes = [
            models.Index(fields=["run", "first_seq"], name="log_run_seq"),
            models.Index(fields=["run", "stream", "first_seq"], name="log_run_stream_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.stream} from line {self.first_seq}"

    def as_message(self) -> dict:
        """What the run page, the live stream and the API show of a chunk."""
        return {"stream": self.stream, "first_seq": self.first_seq, "lines": self.text.split("\n")}


class RunFile(models.Model):
    """A file of a run's history: outputs/… and logs/… copied from the nodes at Finalizing."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=1200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "path"], name="one_file_per_path")]
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path
