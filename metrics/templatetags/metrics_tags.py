"""What the run page's metrics section shows without JavaScript: final values, tags, tables."""

from __future__ import annotations

from typing import Any

from django import template

from metrics import selectors
from metrics.models import SeriesKind
from runs.models import Run

register = template.Library()

TABLE_ROWS_SHOWN = 50


@register.filter
def metric(value: float | None) -> str:
    """A metric value as people read it: six significant digits."""
    if value is None:
        return "—"
    return f"{value:.6g}"


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
