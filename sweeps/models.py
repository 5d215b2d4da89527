"""Hyperparameter sweeps: a parent run, its search space and limits, and one row per child.

Everything a sweep needs to go on is here, so that any process (a node ending a child, the web
server taking a metric, the controller's tick) can drive it after any other stopped.
"""

from __future__ import annotations

from django.db import models

from runs.models import Run


class Sweep(models.Model):
    parent = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="sweep")
    # {"type": "random" | "grid" | "bayesian", "space": {name: [kind, [arguments]]}, "seed": int}
    sampling = models.JSONField()
    # {"type": "BanditPolicy" | …, "evaluation_interval": 1, "delay_evaluation": 0, …}
    policy = models.JSONField()
    primary_metric_name = models.CharField(max_length=255)
    primary_metric_goal = models.CharField(max_length=8)  # MAXIMIZE or MINIMIZE
    max_total_runs = models.PositiveIntegerField()
    max_concurrent_runs = models.PositiveIntegerField()
    max_duration_minutes = models.PositiveIntegerField(null=True, blank=True)
    # Set once no child is to be started any more (limits reached, canceled): why.
    end_reason = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"sweep of {self.parent.run_id}"

    @property
    def maximize(self) -> bool:
        return self.primary_metric_goal == "MAXIMIZE"


class SweepChild(models.Model):
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="children")
    index = models.PositiveIntegerField()
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="sweep_child")
    parameters = models.JSONField()

    class Meta:
        constraints = [
            # A child is made once whichever processes race to make it: the loser's insert fails.
            models.UniqueConstraint(fields=["sweep", "index"], name="one_child_per_sweep_index"),
        ]
        ordering = ["index"]

    def __str__(self) -> str:
        return f"{self.sweep}: child {self.index}"
