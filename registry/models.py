"""Registered models, their numbered immutable versions, the files of each, and ONNX exports."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from runs.models import FINAL_STATUSES, Run, RunStatus
from trainhub.workspaces.models import Workspace

# No ':' (the CLI names a version NAME:VERSION) and room for the "-onnx" suffix of exports.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
BAD_MODEL_NAME = (
    "A model name is 1 to 200 letters, digits, '-', '_' or '.', starting with a letter or digit: {name!r} is not."
)


def model_name_validator(name: str) -> None:
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.match(name):
        raise ValidationError(BAD_MODEL_NAME.format(name=name))


class Model(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200, validators=[model_name_validator])
    # The number the last version got; kept when versions are deleted so that none is reused.
    last_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="model_name_per_workspace")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """One immutable version; only its tags change after registration."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    # The name of the registered file or folder: downloads recreate it under the target folder.
    root = models.CharField(max_length=255)
    is_folder = models.BooleanField(default=False)
    size = models.BigIntegerField(default=0)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    framework = models.CharField(max_length=40, default="PyTorch")
    framework_version = models.CharField(max_length=40, blank=True)

    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions")
    # Lineage copied at registration, so it survives the run row.
    run_identifier = models.CharField(max_length=120, blank=True)
    experiment_name = models.CharField(max_length=100, blank=True)
    environment_name = models.CharField(max_length=255, blank=True)
    environment_version = models.PositiveIntegerField(null=True, blank=True)
    snapshot_sha256 = models.CharField(max_length=64, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="one_row_per_model_version")]
        ordering = ["model__name", "-version"]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.version}"


class ModelBlob(models.Model):
    """A file uploaded for a local registration, stored once per content hash in a workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="model_blobs")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    storage_name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "sha256"], name="model_blob_per_workspace")]

    def __str__(self) -> str:
        return self.sha256[:12]


class ModelFile(models.Model):
    """A file of a version. `storage_name` points at the run's stored file (registration from a
    run: nothing is copied, run history is immutable) or at an uploaded blob."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=1200)
    blob = models.ForeignKey(ModelBlob, null=True, blank=True, on_delete=models.PROTECT, related_name="files")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="one_model_file_per_path")]
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class OnnxExport(models.Model):
    """An export of a version to ONNX, done by a TrainHub run on a node (never in the server)."""

    source = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="onnx_exports")
    source_path = models.CharField(max_length=1024)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    sample_input_shape = models.JSONField(default=list)
    opset = models.PositiveIntegerField()
    tolerance = models.FloatField()
    passed = models.BooleanField(null=True, blank=True)
    max_abs_diff = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    result = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="exported_from"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"ONNX export {self.pk} of {self.source_id}"

    @property
    def state(self) -> str:
        """Succeeded, Failed, or the status of the export's run while it goes on."""
        if self.passed:
            return "Succeeded"
        if self.passed is False or self.run is None:
            return "Failed"
        if self.run.status in FINAL_STATUSES:
            # A run that ended without reporting failed before it could say why.
            return "Failed" if self.run.status != RunStatus.CANCELED else "Canceled"
        return self.run.status

    @property
    def reason(self) -> str:
        if self.message:
            return self.message
        if self.run is not None and self.run.status in FINAL_STATUSES:
            return self.run.status_reason
        return ""
