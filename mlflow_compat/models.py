"""The models `mlflow.<flavor>.log_model` announces before uploading them (MLflow 3's logged models).

Their files are the run's outputs (`outputs/<name>/…`): this row only remembers what MLflow's client
asks back about one (its id, name, status, tags and params) while it logs it.
"""

from __future__ import annotations

from django.db import models

from runs.models import Run


class LoggedModel(models.Model):
    model_id = models.CharField(max_length=40, unique=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="mlflow_models")
    name = models.CharField(max_length=255)
    path = models.CharField(max_length=1024, help_text="Where its files go in the run: outputs/<name>.")
    model_type = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=40, default="LOGGED_MODEL_PENDING")
    tags = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.model_id} ({self.path})"
