"""Environments (curated when global, else a workspace's), their immutable versions, and builds."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}$"
NAME_MESSAGE = "Use 1 to 127 letters, digits, '.', '-' or '_', starting with a letter or digit."
name_validator = RegexValidator(NAME_PATTERN, NAME_MESSAGE)


class Environment(models.Model):
    """A named line of versions. workspace NULL means curated: global, made by administrators."""

    workspace = models.ForeignKey(
        "workspaces.Workspace",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="environments",
    )
    name = models.CharField(max_length=127, validators=[name_validator])
    description = models.TextField(blank=True)
    deprecated = models.BooleanField(
        default=False, help_text="Still usable, but shown as deprecated and no longer recommended."
    )
    answers_to = models.JSONField(
        default=list,
        blank=True,
        help_text="Curated names of the cloud SDK (AzureML-…) that a curated environment stands in "
        "for: Environment.get finds it under each, with AzureML- or TrainHub- in front.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="environment_name_per_workspace"),
            # NULLs are never equal in a unique index: curated names need their own.
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(workspace__isnull=True),
                name="curated_environment_name",
            ),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name if self.workspace_id is None else f"{self.name} ({self.workspace})"

    @property
    def is_curated(self) -> bool:
        return self.workspace_id is None


class EnvironmentVersion(models.Model):
    """One immutable spec of an environment: a change registers the next version."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "version"], name="one_version_number_per_environment")
        ]
        ordering = ["environment", "-version"]

    def __str__(self) -> str:
        return f"{self.environment.name} version {self.version}"


class BuildStatus(models.TextChoices):
    BUILDING = "building", "Building"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class EnvironmentBuild(models.Model):
    """One materialisation of a spec on one node. Every version with that spec hash shares it."""

    spec_hash = models.CharField(max_length=64, db_index=True)
    version = models.ForeignKey(
        EnvironmentVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="builds",
        help_text="The version the build was asked for.",
    )
    node = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=BuildStatus.choices, default=BuildStatus.BUILDING)
    cache_hit = models.BooleanField(default=False)
    log = models.TextField(blank=True)
    reason = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.spec_hash[:12]} on {self.node}: {self.status}"

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
