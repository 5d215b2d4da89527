"""Metrics of runs: a series per (run, name, rank), its points in packed chunks, table rows.

A point is not a row: a series keeps its points in chunks (little-endian int64 steps, float64
values, float64 epoch-second times, in arrival order). Ingest is then one INSERT or UPDATE per
series per request, and a million-point series is read as a few hundred rows instead of a
million (on SQLite, a million per-point rows took 0.8–1.3 s to read; the chunks take tens of ms).
"""

from __future__ import annotations

import math

from django.db import models

from runs.models import Experiment, Run
from trainhub.workspaces.models import Workspace


class SeriesKind(models.TextChoices):
    SCALAR = "scalar"  # run.log / run.log_list: numbers over steps
    TABLE = "table"  # run.log_row: rows of named cells


class MetricSeries(models.Model):
    """One metric of one rank of a run, with a running summary for tables and sorting."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_series")
    # Denormalised from the run so that an experiment's runs, and a workspace's, sort by a metric's
    # last, min or max value through one index range instead of a sort of every run.
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    rank = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=8, choices=SeriesKind.choices, default=SeriesKind.SCALAR)
    description = models.CharField(max_length=1000, blank=True)
    count = models.BigIntegerField(default=0)
    last_step = models.BigIntegerField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_time = models.FloatField(null=True, blank=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "metric series"
        constraints = [
            models.UniqueConstraint(fields=["run", "name", "rank"], name="one_series_per_run_name_rank"),
        ]
        indexes = [
            models.Index(fields=[scope, "name", "rank", value], name=f"series_{scope}_{value}")
            for scope in ("experiment", "workspace")
            for value in ("last_value", "min_value", "max_value")
        ]
        ordering = ["name", "rank"]

    def __str__(self) -> str:
        return f"{self.name}[{self.rank}]"

    @property
    def final_value(self) -> float | None:
        """The last value logged: NaN where a scalar series with points has no last value stored
        (ingest keeps NaN out of the summary columns, see metrics.services._append_points)."""
        if self.last_value is None and self.count and self.kind == SeriesKind.SCALAR:
            return math.nan
        return self.last_value


class MetricChunk(models.Model):
    """Consecutive points of one scalar series (arrival order), as packed arrays."""

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="chunks")
    first_index = models.BigIntegerField()  # position of the first point in the series
    count = models.PositiveIntegerField()
    min_step = models.BigIntegerField()
    max_step = models.BigIntegerField()
    steps = models.BinaryField()
    values = models.BinaryField()
    times = models.BinaryField()

    class Meta:
        indexes = [models.Index(fields=["series", "first_index"], name="chunk_series_index")]

    def __str__(self) -> str:
        return f"{self.series} [{self.first_index}, {self.first_index + self.count})"


class MetricRow(models.Model):
    """One `run.log_row(name, **cells)` call."""

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="rows")
    index = models.BigIntegerField()  # position in the series, in arrival order
    step = models.BigIntegerField()
    time = models.FloatField()
    cells = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["series", "index"], name="row_series_index")]

    def __str__(self) -> str:
        return f"{self.series} row {self.index}"
