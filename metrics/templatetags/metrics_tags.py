"""What the run page's metrics section shows without JavaScript: final values, tags, tables."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from metrics import runs_table, selectors
from metrics.models import SeriesKind
from runs.models import Run
from trainhub.ops.templatetags.site_tags import when

register = template.Library()

TABLE_ROWS_SHOWN = 50


@register.filter
def metric(value: float | None) -> str:
    return runs_table.metric_text(value)


@register.simple_tag
def run_metrics(run: Run) -> dict[str, Any]:
    series = list(selectors.series_of(run, rank=0))
    tables = []
    for item in series:
        if item.kind == SeriesKind.TABLE:
            rows = selectors.rows_of(item, limit=TABLE_ROWS_SHOWN)
            columns = selectors.table_columns(rows)
            tables.append(
                {
                    "series": item,
                    "columns": columns,
                    "rows": [{"step": r.step, "cells": [r.cells.get(c, "") for c in columns]} for r in rows],
                }
            )
    return {
        "scalars": [s for s in series if s.kind == SeriesKind.SCALAR],
        "tables": tables,
        "ranks": selectors.ranks_of(run),
        "tags": sorted(run.tags.items()),
    }


@register.filter
def duration(seconds: float | None) -> str:
    """A run's duration as the page's script counts it up."""
    return runs_table.duration_text(seconds)


@register.simple_tag
def run_cells(run: Run, cells: list[dict[str, Any]]) -> SafeString:
    """A runs-table row's cells (metrics/runs_table.cells_of), written here rather than in the
    template: 50 rows of a dozen columns took the template most of the page's time."""
    shown = []
    for cell in cells:
        column, value = cell["column"], cell["value"]
        if column.kind == "metric":
            series = cell.get("series")
            if series is None:
                shown.append(
                    format_html(
                        '<td class="num" data-metric="{}"><span class="value">{}</span></td>', column.key, metric(value)
                    )
                )
            else:
                low, high = metric(series.min_value), metric(series.max_value)
                shown.append(
                    format_html(
                        '<td class="num" data-metric="{}" title="min {} · max {}"><span class="value">{}</span>'
                        '<br><span class="muted range">{} – {}</span></td>',
                        column.key,
                        low,
                        high,
                        metric(value),
                        low,
                        high,
                    )
                )
        elif column.kind == "duration":
            started = run.started_at
            since = format_html(' data-running-since="{}"', started.isoformat()) if started and not run.is_final else ""
            shown.append(format_html("<td data-duration{}>{}</td>", since, duration(value)))
        elif column.kind == "started":
            shown.append(format_html("<td>{}</td>", when(value)))
        elif column.kind == "parameters":
            spans = format_html_join(" ", '<span class="param">{}={}</span>', value.items())
            shown.append(format_html('<td class="params">{}</td>', spans))
        else:
            shown.append(format_html("<td>{}</td>", "" if value is None else value))
    return SafeString("".join(shown))
