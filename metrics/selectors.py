"""Reads about metrics: a run's series, their points (whole or for charts), rows, experiments."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.http import Http404

from metrics.downsample import lttb_indices
from metrics.models import MetricChunk, MetricRow, MetricSeries, SeriesKind
from runs.models import Experiment, Run

METRIC_NOT_FOUND = "Run {run_id} has no metric {name!r} for rank {rank}."
BAD_AXIS = "The x axis is 'step' or 'time'."
DEFAULT_CHART_POINTS = 1500
MAX_CHART_POINTS = 10_000
COMPARE_MAX_RUNS = 20


@dataclass
class Points:
    """A series' points in arrival order; `count` is how many were stored when they were read."""

    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray

    @property
    def count(self) -> int:
        return len(self.values)


def series_of(
    run: Run, *, rank: int | None = None, kind: str | None = None
) -> QuerySet[MetricSeries]:
    found = MetricSeries.objects.filter(run=run)
    if rank is not None:
        found = found.filter(rank=rank)
    if kind is not None:
        found = found.filter(kind=kind)
    return found.order_by("name", "rank")


def ranks_of(run: Run) -> list[int]:
    return sorted(set(MetricSeries.objects.filter(run=run).values_list("rank", flat=True))) or [0]


def series_get(run: Run, name: str, rank: int = 0) -> MetricSeries:
    found = MetricSeries.objects.filter(run=run, name=name, rank=rank).first()
    if found is None:
        raise Http404(METRIC_NOT_FOUND.format(run_id=run.run_id, name=name, rank=rank))
    return found


def _empty() -> Points:
    return Points(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))


def points_by_series(series_ids: Iterable[int], *, with_times: bool = True) -> dict[int, Points]:
    """Every point of each series, from its chunks in one query."""
    ids = list(series_ids)
    columns = ["series_id", "steps", "values"] + (["times"] if with_times else [])
    parts: dict[int, list[tuple]] = {series_id: [] for series_id in ids}
    for row in (
        MetricChunk.objects.filter(series_id__in=ids)
        .order_by("series_id", "first_index")
        .values_list(*columns)
    ):
        parts[row[0]].append(row[1:])
    found = {}
    for series_id, chunks in parts.items():
        if not chunks:
            found[series_id] = _empty()
            continue
        steps = np.concatenate([np.frombuffer(c[0], dtype="<i8") for c in chunks])
        values = np.concatenate([np.frombuffer(c[1], dtype="<f8") for c in chunks])
        times = (
            np.concatenate([np.frombuffer(c[2], dtype="<f8") for c in chunks])
            if with_times
            else np.zeros(len(values))
        )
        found[series_id] = Points(steps, values, times)
    return found


def points_of(series: MetricSeries) -> Points:
    return points_by_series([series.pk])[series.pk]


def chart_series(points: Points, *, axis: str, max_points: int) -> dict[str, Any]:
    """Points sorted by the x axis, reduced with LTTB to at most `max_points` for drawing."""
    if axis not in ("step", "time"):
        raise ValueError(BAD_AXIS)
    x = points.steps if axis == "step" else points.times
    steps, values, times = points.steps, points.values, points.times
    if len(x) > 1 and not bool(np.all(x[1:] >= x[:-1])):
        order = np.argsort(x, kind="stable")
        x, steps, values, times = x[order], steps[order], values[order], times[order]
    keep = lttb_indices(x, values, max(3, min(max_points, MAX_CHART_POINTS)))
    return {
        "count": points.count,
        "steps": steps[keep].tolist(),
        "values": values[keep].tolist(),
        "times": times[keep].tolist(),
    }


def chart_data(
    run: Run,
    *,
    rank: int = 0,
    axis: str = "step",
    max_points: int = DEFAULT_CHART_POINTS,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The scalar series of one rank of a run, each ready to draw."""
    series = list(series_of(run, rank=rank, kind=SeriesKind.SCALAR))
    if names:
        series = [s for s in series if s.name in set(names)]
    points = points_by_series([s.pk for s in series], with_times=True)
    return [
        {"name": s.name, "rank": s.rank, "description": s.description, "last_value": s.last_value}
        | chart_series(points[s.pk], axis=axis, max_points=max_points)
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
        page = list(
            MetricRow.objects.filter(series=series, index__gt=after).order_by("index")[:batch]
        )
        yield from page
        if len(page) < batch:
            return
        after = page[-1].index


# ---------------------------------------------------------------- experiments


def experiment_metric_names(experiment: Experiment, limit: int = 200) -> list[str]:
    """Names of the scalar metrics rank 0 of the experiment's runs logged."""
    return list(
        MetricSeries.objects.filter(experiment=experiment, rank=0, kind=SeriesKind.SCALAR)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()[:limit]
    )


def runs_with_final_values(
    experiment: Experiment,
    *,
    columns: list[str],
    sort: str | None,
    descending: bool,
    offset: int,
    limit: int,
) -> list[Run]:
    """A page of the experiment's runs; each has `final_values` ({name: last value of rank 0}).

    Sorted by a metric's final value (runs without it last), or newest first.
    """
    runs = Run.objects.filter(experiment=experiment).select_related("created_by")
    if sort:
        final = MetricSeries.objects.filter(
            run=OuterRef("pk"), name=sort, rank=0, kind=SeriesKind.SCALAR
        )
        runs = runs.annotate(sort_value=Subquery(final.values("last_value")[:1]))
        key = (
            F("sort_value").desc(nulls_last=True)
            if descending
            else F("sort_value").asc(nulls_last=True)
        )
        runs = runs.order_by(key, "-id")
    else:
        runs = runs.order_by("-id")
    page = list(runs[offset : offset + limit])
    finals: dict[int, dict[str, float | None]] = {run.pk: {} for run in page}
    if columns:
        for run_pk, name, value in MetricSeries.objects.filter(
            run_id__in=list(finals), name__in=columns, rank=0, kind=SeriesKind.SCALAR
        ).values_list("run_id", "name", "last_value"):
            finals[run_pk][name] = value
    for run in page:
        run.final_values = [finals[run.pk].get(name) for name in columns]  # type: ignore[attr-defined]
    return page


def runs_for_compare(experiment: Experiment, run_ids: list[str]) -> list[Run]:
    """The named runs of the experiment, in the order given; unknown ids are left out."""
    found = {
        r.run_id: r
        for r in Run.objects.filter(experiment=experiment, run_id__in=run_ids[:COMPARE_MAX_RUNS])
    }
    return [found[run_id] for run_id in run_ids if run_id in found]
