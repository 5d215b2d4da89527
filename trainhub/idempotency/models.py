"""The first answer to each idempotency key, per workspace and endpoint."""

from __future__ import annotations

from django.db import models


class IdempotentAnswer(models.Model):
    """What a keyed POST answered; a repeat of it with the same key gets this answer back."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="+")
    # The endpoint and its object (e.g. `runs/41/metrics`) and the caller: a key is only ever
    # looked up where, and by whom, it was first used.
    scope = models.CharField(max_length=300)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(default=0)
    answer = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "scope", "key"], name="one_answer_per_key")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"
