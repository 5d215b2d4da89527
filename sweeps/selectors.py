"""Reads of sweeps: one sweep of a workspace, its children with their primary metric, the best."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import Http404

from metrics.models import MetricSeries, SeriesKind
from metrics.selectors import points_by_series
from runs.models import FINAL_STATUSES, Run
from sweeps.models import Sweep, SweepChild
from trainhub.workspaces.models import Workspace

SWEEP_NOT_FOUND = "No sweep {run_id!r} in this workspace."


def sweep_get(workspace: Workspace, run_id: str) -> Sweep:
    found = (
        Sweep.objects.select_related("parent", "parent__experiment", "parent__workspace", "parent__cluster")
        .filter(parent__workspace=workspace, parent__run_id=run_id)
        .first()
    )
    if found is None:
        raise Http404(SWEEP_NOT_FOUND.format(run_id=run_id))
    return found


def sweep_of_run(run: Run) -> Sweep | None:
    return Sweep.objects.filter(parent=run).first()


def _series(sweep: Sweep, run_ids: list[int]) -> dict[int, MetricSeries]:
    return {
        series.run_id: series
        for series in MetricSeries.objects.filter(
            run_id__in=run_ids, name=sweep.primary_metric_name, rank=0, kind=SeriesKind.SCALAR
        )
    }


def primary_metric_values(sweep: Sweep, children: list[SweepChild]) -> dict[int, list[float]]:
    """{child index: its primary metric values in the order logged}."""
    series = _series(sweep, [child.run_id for child in children])
    points = points_by_series([s.pk for s in series.values()], columns=("values",))
    return {
        child.index: points[series[child.run_id].pk].values.tolist() for child in children if child.run_id in series
    }


@dataclass
class ChildRow:
    index: int
    run: Run
    parameters: dict[str, Any]
    best_primary_metric: float | None
    last_primary_metric: float | None


def child_rows(sweep: Sweep) -> list[ChildRow]:
    """Every child in the order made, with its best logged primary metric (by the sweep's goal)."""
    children = list(SweepChild.objects.filter(sweep=sweep).select_related("run").order_by("index"))
    series = _series(sweep, [child.run_id for child in children])
    rows = []
    for child in children:
        found = series.get(child.run_id)
        best = None
        if found is not None and found.count:
            best = found.max_value if sweep.maximize else found.min_value
        # In the space's order (a PostgreSQL JSON object keeps its own).
        parameters = {name: child.parameters[name] for name in sweep.sampling["order"] if name in child.parameters}
        rows.append(ChildRow(child.index, child.run, parameters, best, found.last_value if found else None))
    return rows


def sorted_by_primary_metric(sweep: Sweep, rows: list[ChildRow]) -> list[ChildRow]:
    """Best first; children without the metric last, in the order made."""
    ranked = sorted(
        (row for row in rows if row.best_primary_metric is not None),
        key=lambda row: row.best_primary_metric,  # type: ignore[arg-type, return-value]
        reverse=sweep.maximize,
    )
    return ranked + [row for row in rows if row.best_primary_metric is None]


def best_row(sweep: Sweep, rows: list[ChildRow]) -> ChildRow | None:
    ranked = sorted_by_primary_metric(sweep, rows)
    return ranked[0] if ranked and ranked[0].best_primary_metric is not None else None


def ended_history(sweep: Sweep) -> list[tuple[dict[str, Any], float]]:
    """(parameters, best primary metric) of the ended children that logged it: Bayesian sampling's data."""
    return [
        (row.parameters, row.best_primary_metric)
        for row in child_rows(sweep)
        if row.run.status in FINAL_STATUSES and row.best_primary_metric is not None
    ]
