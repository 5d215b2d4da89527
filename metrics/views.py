"""Metric pages: CSV downloads of a run's series, an experiment's runs by metric, compare view."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.template.loader import render_to_string

from metrics import runs_table, selectors
from metrics.models import MetricSeries, SeriesKind
from metrics.run_filter import FilterError
from runs import selectors as run_selectors
from runs.models import Experiment
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import Access

CSV_POINTS_PER_PIECE = 20_000


def _csv_line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _iso(times: np.ndarray) -> np.ndarray:
    return np.datetime_as_string((times * 1e6).astype("datetime64[us]"), unit="ms", timezone="UTC")


def _scalar_csv(series: list[MetricSeries]) -> Iterator[str]:
    yield "name,rank,step,value,time_unix,time_utc\n"
    for item in series:
        points = selectors.points_of(item)
        all_steps, all_values, all_times = points.every_column()
        prefix = _csv_line([item.name, item.rank]).rstrip("\n")
        for start in range(0, points.count, CSV_POINTS_PER_PIECE):
            stop = start + CSV_POINTS_PER_PIECE
            steps = all_steps[start:stop].tolist()
            values = all_values[start:stop].tolist()
            times = all_times[start:stop].tolist()
            utc = _iso(all_times[start:stop])
            yield "".join(
                f"{prefix},{s},{v!r},{t!r},{u}\n" for s, v, t, u in zip(steps, values, times, utc, strict=True)
            )


def _table_csv(series: MetricSeries) -> Iterator[str]:
    columns = selectors.table_columns(selectors.iter_rows(series))
    yield _csv_line(["name", "rank", "step", "time_unix", *columns])
    for row in selectors.iter_rows(series):
        yield _csv_line(
            [
                series.name,
                series.rank,
                row.step,
                repr(row.time),
                *[row.cells.get(c, "") for c in columns],
            ]
        )


@login_required
def run_metrics_csv(request: HttpRequest, workspace_name: str, run_id: str) -> StreamingHttpResponse:
    """Every point of one metric (?name=, ?rank=) or of all the run's metrics, as CSV."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = run_selectors.run_get(access.workspace, run_id)
    name = request.GET.get("name")
    rank_text = request.GET.get("rank", "")
    rank = int(rank_text) if rank_text.isdigit() else None
    if name:
        series = selectors.series_get(run, name, rank or 0)
        body = _table_csv(series) if series.kind == SeriesKind.TABLE else _scalar_csv([series])
        filename = f"{run.run_id}-{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}.csv"
    else:
        body = _scalar_csv(list(selectors.series_of(run, rank=rank, kind=SeriesKind.SCALAR)))
        filename = f"{run.run_id}-metrics.csv"
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _chosen(request: HttpRequest, key: str) -> list[str]:
    """A list from the query string, given as repeated keys or comma-separated (shareable URLs)."""
    found: list[str] = []
    for value in request.GET.getlist(key):
        found.extend(part for part in value.split(",") if part and part not in found)
    return found


@login_required
def experiment_metrics(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    """The runs table of one experiment."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    return _runs_table(request, access, run_selectors.experiment_get(access.workspace, name))


@login_required
def workspace_runs(request: HttpRequest, workspace_name: str) -> HttpResponse:
    """The runs table of every experiment of the workspace."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    return _runs_table(request, access, None)


def _runs_table(request: HttpRequest, access: Access, experiment: Experiment | None) -> HttpResponse:
    """Columns, filter, sort and page all come from the URL, so a reload or a shared link shows the
    same table; links keep every choice but the page."""
    scope = experiment or access.workspace
    names = runs_table.metric_names(scope)
    columns = runs_table.chosen_columns(_chosen(request, "columns"), names)
    sort = runs_table.sort_of(request.GET.get("sort", ""), names)
    descending = request.GET.get("order") == "desc"
    expression = request.GET.get("q", "").strip()[:2000]
    cursor = request.GET.get("after", "")[:2000]
    filter_error = None
    try:
        page = runs_table.runs_page(scope, expression=expression, sort=sort, descending=descending, cursor=cursor)
    except FilterError as error:
        filter_error = str(error)
        page = runs_table.TablePage([], None)
    values = runs_table.metric_values([run.pk for run in page.runs], columns)
    rows = [{"run": run, "cells": runs_table.cells_of(run, columns, values[run.pk])} for run in page.runs]
    parameter_keys, tag_keys = runs_table.parameter_and_tag_keys(scope)
    kept = [("columns", ",".join(c.key for c in columns))] + ([("q", expression)] if expression else [])
    # Newest first on its first page, the table takes in runs submitted while it is open.
    follows_new_runs = sort is None and not cursor and filter_error is None
    scoped = [("experiment", experiment.name)] if experiment else []
    sorted_by = [("sort", sort.key), ("order", "desc" if descending else "asc")] if sort else []
    return workspace_page(
        request,
        access,
        "metrics/runs_table.html",
        "experiments" if experiment else "runs",
        experiment=experiment,
        names=names,
        columns=columns,
        chosen={c.key for c in columns},
        run_columns=list(runs_table.RUN_COLUMNS.items()),
        always_shown=[runs_table.Column(key, key) for key in runs_table.ALWAYS_SHOWN],
        sort_columns=[(key, label) for key, label in runs_table.SORT_COLUMNS],
        parameter_keys=parameter_keys,
        tag_keys=tag_keys,
        sort=sort,
        descending=descending,
        rows=rows,
        first_page=bool(cursor),
        next_query=urlencode([*kept, *sorted_by, ("after", page.next_cursor)]) if page.next_cursor else "",
        cursor_error=page.cursor_error,
        selected=_chosen(request, "runs"),
        expression=expression,
        filter_error=filter_error,
        base_query=urlencode(kept),
        sort_query=urlencode(sorted_by),
        column_keys=",".join(c.key for c in columns),
        follows_new_runs=follows_new_runs,
        new_rows_query=urlencode([*kept, *scoped]),
        newest=page.runs[0].pk if page.runs else 0,
    )


@login_required
def table_states(request: HttpRequest, workspace_name: str) -> JsonResponse:
    """?runs=a,b&columns=metrics.accuracy,...: the status, duration and metric cells of runs a
    runs table shows, for its live updates."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    columns = [
        column
        for column in (runs_table.column_of(key, []) for key in _chosen(request, "columns"))
        if column is not None and column.kind == "metric"
    ]
    return JsonResponse(runs_table.table_states(access.workspace, _chosen(request, "runs"), columns))


@login_required
def table_new_rows(request: HttpRequest, workspace_name: str) -> JsonResponse:
    """?newer=<id>&q=&columns=&experiment=: the rows, as the table draws them, of the runs newer
    than the newest a newest-first table shows that match its filter, newest first."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    experiment_name = request.GET.get("experiment")
    scope = run_selectors.experiment_get(access.workspace, experiment_name) if experiment_name else access.workspace
    newer = request.GET.get("newer", "")
    if not newer.isdigit():
        return JsonResponse({"rows": []})
    columns = runs_table.chosen_columns(_chosen(request, "columns"), runs_table.metric_names(scope))
    try:
        runs = runs_table.newer_runs(scope, int(newer), expression=request.GET.get("q", "").strip()[:2000])
    except FilterError:
        runs = []
    values = runs_table.metric_values([run.pk for run in runs], columns)
    context: dict[str, Any] = {"workspace": access.workspace, "experiment": experiment_name, "selected": []}
    return JsonResponse(
        {
            "rows": [
                {
                    "id": run.pk,
                    "html": render_to_string(
                        "metrics/_runs_table_row.html",
                        {**context, "row": {"run": run, "cells": runs_table.cells_of(run, columns, values[run.pk])}},
                    ),
                }
                for run in runs
            ]
        }
    )


@login_required
def compare(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    """Curves of several runs of an experiment overlaid, one chart per metric (?runs=a,b,c)."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    experiment = run_selectors.experiment_get(access.workspace, name)
    return _compare_page(request, access, experiment)


@login_required
def compare_across(request: HttpRequest, workspace_name: str) -> HttpResponse:
    """The same for runs of any experiments of the workspace."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    return _compare_page(request, access, None)


def _compare_page(request: HttpRequest, access: Access, experiment: Experiment | None) -> HttpResponse:
    run_ids = _chosen(request, "runs")
    runs = selectors.runs_for_compare(experiment or access.workspace, run_ids)
    summaries = selectors.scalar_summaries(runs)
    names = sorted({metric for _, metric in summaries})
    finals = {key: values[0] for key, values in summaries.items()}
    parameters = [run_selectors.run_parameters(run) for run in runs]
    differing = run_selectors.differing_parameters(parameters)
    across = experiment is None or len({run.experiment_id for run in runs}) > 1
    labelled = [
        {
            "run_id": run.run_id,
            "label": (f"{run.experiment.name} #{run.number}" if across else f"#{run.number}")
            + (f" {run.display_name}" if run.display_name else "")
            + (" (" + ", ".join(f"{n}={values.get(n, '—')}" for n in differing[:4]) + ")" if differing else ""),
        }
        for run, values in zip(runs, parameters, strict=True)
    ]
    rows = [{"run": run, "values": [finals.get((run.pk, metric)) for metric in names]} for run in runs]
    every = sorted({name for values in parameters for name in values})
    parameter_rows = [
        {"name": name, "differs": name in differing, "values": [values.get(name, "") for values in parameters]}
        for name in every
    ]
    # What the scatter can put on either axis: each parameter, each metric's last, min and max.
    scatter_fields = [{"key": f"params.{name}", "label": name} for name in every] + [
        {"key": f"metrics.{name}{suffix}", "label": f"{name}{label}"}
        for name in names
        for suffix, label in (("", ""), (":min", " (min)"), (":max", " (max)"))
    ]
    scatter_runs = [
        {
            "label": item["label"],
            "values": {f"params.{name}": value for name, value in values.items()}
            | {
                f"metrics.{metric}{suffix}": summary[position]
                for metric in names
                if (summary := summaries.get((run.pk, metric)))
                for position, suffix in enumerate(("", ":min", ":max"))
            },
        }
        for run, values, item in zip(runs, parameters, labelled, strict=True)
    ]
    return workspace_page(
        request,
        access,
        "metrics/compare.html",
        "experiments",
        experiment=experiment,
        runs=runs,
        labelled=labelled,
        across=across,
        rows=rows,
        names=names,
        parameter_rows=parameter_rows,
        scatter={"fields": scatter_fields, "runs": scatter_runs, "differing": [f"params.{n}" for n in differing]},
        addable=run_selectors.recent_runs_of(access.workspace, exclude=[run.pk for run in runs]),
        share_query=",".join(run.run_id for run in runs),
        missing=[run_id for run_id in run_ids if run_id not in {r.run_id for r in runs}],
    )
