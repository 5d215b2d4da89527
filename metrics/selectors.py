"""Reads about metrics: a run's series, their points (whole or for charts), rows, experiments."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import QuerySet
from django.http import Http404

from metrics.downsample import lttb_indices
from metrics.jsonvalues import json_number
from metrics.models import MetricChunk, MetricRow, MetricSeries, SeriesKind
from runs.models import Experiment, Run
from trainhub.workspaces.models import Workspace

METRIC_NOT_FOUND = "Run {run_id} has no metric {name!r} for rank {rank}."
BAD_AXIS = "The x axis is 'step' or 'time'."
DEFAULT_CHART_POINTS = 1000
MAX_CHART_POINTS = 10_000
COMPARE_MAX_RUNS = 20
CHART_CACHE_SECONDS = 3600


@dataclass
class Points:
    """A series' points in arrival order (columns that were not read are None)."""

    steps: np.ndarray | None
    values: np.ndarray
    times: np.ndarray | None

    @property
    def count(self) -> int:
        return len(self.values)

    def every_column(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, values, times) of points read with all their columns."""
        if self.steps is None or self.times is None:
            raise ValueError("these points were read without their steps or times")
        return self.steps, self.values, self.times


COLUMN_TYPES = {"steps": "<i8", "values": "<f8", "times": "<f8"}


def series_of(run: Run, *, rank: int | None = None, kind: str | None = None) -> QuerySet[MetricSeries]:
    found = MetricSeries.objects.filter(run=run)
    if rank is not None:
        found = found.filter(rank=rank)
    if kind is not None:
        found = found.filter(kind=kind)
    return found.order_by("name", "rank")


def scalar_summaries(runs: Iterable[Run]) -> dict[tuple[int, str], tuple[float | None, float | None, float | None]]:
    """(last, min, max) of rank 0's scalar metrics of these runs, by (run pk, metric name)."""
    found = MetricSeries.objects.filter(run__in=runs, rank=0, kind=SeriesKind.SCALAR)
    return {
        (run_pk, name): (last, low, high)
        for run_pk, name, last, low, high in found.values_list("run_id", "name", "last_value", "min_value", "max_value")
    }


def ranks_of(run: Run) -> list[int]:
    return sorted(set(MetricSeries.objects.filter(run=run).values_list("rank", flat=True))) or [0]


def series_get(run: Run, name: str, rank: int = 0) -> MetricSeries:
    found = MetricSeries.objects.filter(run=run, name=name, rank=rank).first()
    if found is None:
        raise Http404(METRIC_NOT_FOUND.format(run_id=run.run_id, name=name, rank=rank))
    return found


def points_by_series(
    series_ids: Iterable[int], *, columns: tuple[str, ...] = ("steps", "values", "times")
) -> dict[int, Points]:
    """Every point of each series, from its chunks in one query; only the columns asked for."""
    ids = list(series_ids)
    wanted = [c for c in COLUMN_TYPES if c in columns or c == "values"]
    parts: dict[int, list[tuple]] = {series_id: [] for series_id in ids}
    for row in (
        MetricChunk.objects.filter(series_id__in=ids)
        .order_by("series_id", "first_index")
        .values_list("series_id", *wanted)
    ):
        parts[row[0]].append(row[1:])
    found = {}
    for series_id, chunks in parts.items():
        arrays: dict[str, np.ndarray | None] = dict.fromkeys(COLUMN_TYPES)
        for position, column in enumerate(wanted):
            pieces = [np.frombuffer(chunk[position], dtype=COLUMN_TYPES[column]) for chunk in chunks]
            arrays[column] = np.concatenate(pieces) if pieces else np.empty(0, COLUMN_TYPES[column])
        found[series_id] = Points(**arrays)  # type: ignore[arg-type]
    return found


def points_of(series: MetricSeries) -> Points:
    return points_by_series([series.pk])[series.pk]


def chart_series(points: Points, *, axis: str, max_points: int) -> dict[str, Any]:
    """Points sorted by the x axis (step or time), reduced with LTTB to at most `max_points`."""
    if axis not in ("step", "time"):
        raise ValueError(BAD_AXIS)
    x = points.steps if axis == "step" else points.times
    assert x is not None, "read the x axis' column"
    values = points.values
    finite = np.isfinite(values)
    skipped = points.count - int(finite.sum())
    if skipped:
        # NaN and ±inf cannot be drawn: the chart leaves them out and says how many it left out.
        x, values = x[finite], values[finite]
    if len(x) > 1 and not bool(np.all(x[1:] >= x[:-1])):
        order = np.argsort(x, kind="stable")
        x, values = x[order], values[order]
    keep = lttb_indices(x, values, max(3, min(max_points, MAX_CHART_POINTS)))
    return {"count": points.count, "skipped": skipped, "x": x[keep].tolist(), "values": values[keep].tolist()}


def chart_data(
    run: Run,
    *,
    rank: int = 0,
    axis: str = "step",
    max_points: int = DEFAULT_CHART_POINTS,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The scalar series of one rank of a run, each ready to draw.

    A series' drawing is cached under its point count and last update: a new point changes the
    key, so a cached drawing is never stale, and a finished run's charts are reduced once.
    """
    series = list(series_of(run, rank=rank, kind=SeriesKind.SCALAR))
    if names:
        series = [s for s in series if s.name in set(names)]
    keys = {s.pk: f"metrics:chart:{s.pk}:{s.count}:{s.updated_at.timestamp()}:{axis}:{max_points}" for s in series}
    drawn = cache.get_many(list(keys.values()))
    missing = [s for s in series if keys[s.pk] not in drawn]
    if missing:
        # Only the x axis' column and the values: a million-point series is 16 MB, not 24.
        points = points_by_series([s.pk for s in missing], columns=("steps" if axis == "step" else "times",))
        fresh = {keys[s.pk]: chart_series(points[s.pk], axis=axis, max_points=max_points) for s in missing}
        cache.set_many(fresh, timeout=CHART_CACHE_SECONDS)
        drawn.update(fresh)
    return [
        {"name": s.name, "rank": s.rank, "description": s.description, "last_value": json_number(s.final_value)}
        | drawn[keys[s.pk]]
        for s in series
    ]


def rows_of(series: MetricSeries, *, limit: int | None = None) -> list[MetricRow]:
    rows = MetricRow.objects.filter(series=series).order_by("-index" if limit else "index")
    if limit:
        return list(reversed(rows[:limit]))
    return list(rows)


def table_columns(rows: Iterable[MetricRow]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row.cells))
    return list(columns)


def iter_rows(series: MetricSeries, batch: int = 2000) -> Iterator[MetricRow]:
    after = -1
    while True:
        page = list(MetricRow.objects.filter(series=series, index__gt=after).order_by("index")[:batch])
        yield from page
        if len(page) < batch:
            return
        after = page[-1].index


def runs_for_compare(scope: Experiment | Workspace, run_ids: list[str]) -> list[Run]:
    """The named runs of the experiment (or of any experiment of the workspace), in the order
    given; unknown ids are left out."""
    runs = Run.objects.select_related("experiment").filter(run_id__in=run_ids[:COMPARE_MAX_RUNS])
    # The scope is checked here: in SQL SQLite would walk every run of it instead of the run_id index.
    if isinstance(scope, Experiment):
        found = {r.run_id: r for r in runs if r.experiment_id == scope.pk}
    else:
        found = {r.run_id: r for r in runs if r.workspace_id == scope.pk}
    return [found[run_id] for run_id in run_ids if run_id in found]
