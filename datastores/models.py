"""Datastores (named folders of uploaded files in a workspace), datasets (named, numbered, frozen
file lists drawn from a datastore) and the inputs a run was given from either."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from runs.models import Run
from trainhub.workspaces.models import Workspace, name_validator

DEFAULT_DATASTORE = "workspaceblobstore"


class DataBlob(models.Model):
    """One stored content of a workspace, by sha256: a file uploaded twice is stored once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="data_blobs")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    storage_name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "sha256"], name="data_blob_per_workspace")]

    def __str__(self) -> str:
        return self.sha256[:12]


class Datastore(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datastores")
    name = models.CharField(max_length=63, validators=[name_validator])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="datastore_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_DATASTORE


class DatastoreFile(models.Model):
    """A file at a path of a datastore; overwriting it points the path at another blob."""

    datastore = models.ForeignKey(Datastore, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    blob = models.ForeignKey(DataBlob, on_delete=models.PROTECT, related_name="datastore_files")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["datastore", "path"], name="datastore_file_path")]
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class Dataset(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=63, validators=[name_validator])
    last_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="dataset_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """A numbered, immutable list of files: what the patterns matched when it was registered."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    sources = models.JSONField(default=list, help_text="[[datastore, pattern], …] as given.")
    file_count = models.PositiveIntegerField(default=0)
    size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "version"], name="dataset_version_number")]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"{self.dataset.name}:{self.version}"


class DatasetFile(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    blob = models.ForeignKey(DataBlob, on_delete=models.PROTECT, related_name="dataset_files")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="dataset_file_path")]
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class InputMode(models.TextChoices):
    MOUNT = "mount"
    DOWNLOAD = "download"


class RunInput(models.Model):
    """Data a run was given: a datastore path or a dataset version, frozen as a file list at
    submission, handed to the run's processes as a local read-only path (`${env_name}`)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="inputs")
    name = models.CharField(max_length=63)
    mode = models.CharField(max_length=8, choices=InputMode.choices)
    datastore = models.ForeignKey(Datastore, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    datastore_path = models.CharField(max_length=1024, blank=True)
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="run_inputs"
    )
    single_file = models.CharField(max_length=255, blank=True, help_text="The file's name when the input is one file.")
    files = models.JSONField(default=list, help_text="[[path, sha256, size], …] handed to the run.")
    size = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="run_input_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.name}"

    @property
    def env_name(self) -> str:
        return f"TRAINHUB_INPUT_{self.name}"
