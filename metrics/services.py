"""Writes about metrics: validate a batch of points, rows and tags, store it, tell viewers."""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from metrics import events, limits
from metrics.jsonvalues import json_numbers
from metrics.models import MetricChunk, MetricRow, MetricSeries, SeriesKind
from runs.models import Run
from runs.run_values import run_values_sync
from trainhub.live import publish_metrics
from trainhub.workspaces.permissions import Access, Action

BAD_BODY = "The body must be a JSON object with any of 'metrics', 'rows' and 'tags' (and 'rank')."
NOT_JSON = "The body is not valid JSON: {error}."
BODY_TOO_LARGE = "The body is larger than {limit} bytes: send the metrics in smaller batches."
BAD_NAME = "A metric name is a string of 1 to " + str(limits.MAX_NAME_LENGTH) + " characters; got {got}."
BAD_RANK = "'rank' is an integer from 0 to " + str(limits.MAX_RANK) + "; got {got!r}."
BAD_LIST = "Metric {name!r}: {field!r} must be a list."
LENGTHS_DIFFER = "Metric {name!r}: {field!r} has {got} items but 'values' has {expected}."
NOT_A_NUMBER = (
    "Metric {name!r}: value {value!r} at position {index} is {kind}, not a number. "
    "Metric values are numbers; record text with run.tag() or run.log_row()."
)
NOT_FINITE = (
    "Metric {name!r}: value {value} at position {index} is not finite. TrainHub stores finite "
    "numbers only: NaN, inf and -inf are refused."
)
BAD_STEP = "Metric {name!r}: step {value!r} at position {index} is not an integer from 0 to 2**63-1."
BAD_TIME = "Metric {name!r}: time {value!r} at position {index} is not a finite number of seconds since 1970."
BAD_PACKED = (
    "Metric {name!r}: {field!r} must be base64 of little-endian 8-byte numbers (float64 values and times, int64 steps)."
)
BAD_DESCRIPTION = "Metric {name!r}: the description is a string of at most {limit} characters."
BAD_ROW = "Row {index}: {problem}."
BAD_CELL = "Row {index} of {name!r}: cell {key!r} is {kind}; cells are finite numbers, strings, booleans or null."
TAG_NOT_STRING = "Tag {key!r}: the value is {kind}; tag values are strings (at most {limit} characters)."
BAD_TAG_KEY = "A tag name is a string of 1 to " + str(limits.MAX_TAG_KEY_LENGTH) + " characters; got {got}."
TOO_MANY_IN_REQUEST = "This request carries {count} points and rows; the limit is {limit} per request."
TOO_MANY_POINTS = "Run {run_id} would hold {total} metric points; the limit is {limit} per run."
TOO_MANY_NAMES = "Run {run_id} would have {total} metric names; the limit is {limit} per run."
TOO_MANY_ROWS = "Run {run_id} would hold {total} table rows; the limit is {limit} per run."
TOO_MANY_TAGS = "Run {run_id} would have {total} tags; the limit is {limit} per run."
KIND_CONFLICT = "{name!r} is already {existing} of this run; a metric and a table cannot share a name."

LIVE_POINTS_PER_SERIES = 1000
AUTO_STEP = -1
LIVE_ROWS = 200
_INT64_MAX = 2**63 - 1


@dataclass
class SeriesBatch:
    name: str
    description: str
    values: np.ndarray
    steps: np.ndarray | None
    times: np.ndarray


@dataclass
class RowsBatch:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # step (or None), time, cells


@dataclass
class MetricsBatch:
    rank: int
    series: list[SeriesBatch]
    tables: list[RowsBatch]
    tags: dict[str, str]

    @property
    def size(self) -> int:
        return sum(len(s.values) for s in self.series) + sum(len(t.rows) for t in self.tables)


@dataclass(frozen=True)
class IngestResult:
    points: int
    rows: int
    tags: int


# ---------------------------------------------------------------- validation


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _check_name(name: Any, message: str = BAD_NAME) -> str:
    if not isinstance(name, str) or not name or len(name) > limits.MAX_NAME_LENGTH:
        got = f"a name of {len(name)} characters" if isinstance(name, str) else _kind(name)
        raise ValidationError(message.format(got=got))
    return name


def _numbers(name: str, items: list[Any], *, what: str) -> np.ndarray:
    """Finite float64s from a JSON list, refusing anything that is not an int or a float."""
    if not set(map(type, items)) <= {int, float}:
        for index, value in enumerate(items):
            if type(value) not in (int, float):
                message = NOT_A_NUMBER if what == "values" else BAD_TIME
                raise ValidationError(message.format(name=name, value=value, index=index, kind=_kind(value)))
    try:
        array = np.array(items, dtype=np.float64)
    except OverflowError:
        array = np.array([float(v) if abs(v) < 1e308 else math.inf for v in items], dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.argmin(finite))
        message = NOT_FINITE if what == "values" else BAD_TIME
        raise ValidationError(message.format(name=name, value=items[index], index=index, kind=""))
    return array


def _steps(name: str, items: list[Any]) -> np.ndarray:
    """Steps as int64, with -1 where the sender left the step to the server (null)."""
    kinds = set(map(type, items))
    if kinds <= {type(None)}:
        return np.full(len(items), AUTO_STEP, dtype=np.int64)
    if kinds <= {int, type(None)}:
        given = np.fromiter((s is not None for s in items), dtype=bool, count=len(items))
        try:
            steps = np.array([AUTO_STEP if s is None else s for s in items], dtype=np.int64)
        except OverflowError:
            steps = None
        if steps is not None and (steps[given].min(initial=0) >= 0):
            return steps
    for index, value in enumerate(items):
        if value is not None and (type(value) is not int or not 0 <= value <= _INT64_MAX):
            raise ValidationError(BAD_STEP.format(name=name, value=value, index=index))
    raise AssertionError("unreachable")


def fill_steps(steps: np.ndarray, previous: int | None) -> np.ndarray:
    """Each step left to the server becomes the previous point's step + 1 (the first one: 0)."""
    auto = steps == AUTO_STEP
    if not auto.any():
        return steps
    positions = np.arange(len(steps))
    # The position of the last explicit step at or before each point (-1: none in this batch).
    anchor = np.maximum.accumulate(np.where(auto, -1, positions))
    start = -1 if previous is None else previous
    base = np.where(anchor >= 0, steps[np.maximum(anchor, 0)], start)
    return np.where(auto, base + positions - anchor, steps)


def _packed(name: str, entry: dict[str, Any], field_name: str, dtype: str) -> np.ndarray | None:
    """A little-endian array sent base64-encoded (what the SDK sends: no JSON number parsing)."""
    given = entry.get(field_name)
    if given is None:
        return None
    try:
        raw = base64.b64decode(given, validate=True)
    except (TypeError, ValueError):
        raise ValidationError(BAD_PACKED.format(name=name, field=field_name)) from None
    if len(raw) % 8:
        raise ValidationError(BAD_PACKED.format(name=name, field=field_name))
    return np.frombuffer(raw, dtype=dtype)


def _series(entry: Any, now: float) -> SeriesBatch:
    if not isinstance(entry, dict):
        raise ValidationError(BAD_BODY)
    name = _check_name(entry.get("name"))
    description = entry.get("description") or ""
    if not isinstance(description, str) or len(description) > limits.MAX_DESCRIPTION_LENGTH:
        raise ValidationError(BAD_DESCRIPTION.format(name=name, limit=limits.MAX_DESCRIPTION_LENGTH))
    values = _packed(name, entry, "values_f64", "<f8")
    if values is not None:
        steps = _packed(name, entry, "steps_i64", "<i8")
        times = _packed(name, entry, "times_f64", "<f8")
        _check_packed(name, values, steps, times)
    else:
        listed = entry.get("values")
        if not isinstance(listed, list):
            raise ValidationError(BAD_LIST.format(name=name, field="values"))
        for field_name in ("steps", "times"):
            given = entry.get(field_name)
            if given is not None and not isinstance(given, list):
                raise ValidationError(BAD_LIST.format(name=name, field=field_name))
            if given is not None and len(given) != len(listed):
                raise ValidationError(
                    LENGTHS_DIFFER.format(name=name, field=field_name, got=len(given), expected=len(listed))
                )
        values = _numbers(name, listed, what="values")
        steps = _steps(name, entry["steps"]) if entry.get("steps") is not None else None
        times = _numbers(name, entry["times"], what="times") if entry.get("times") is not None else None
    if times is None:
        times = np.full(len(values), now, dtype=np.float64)
    return SeriesBatch(name=name, description=description, values=values, steps=steps, times=times)


def _check_packed(name: str, values: np.ndarray, steps: np.ndarray | None, times: np.ndarray | None) -> None:
    for field_name, array in (("steps_i64", steps), ("times_f64", times)):
        if array is not None and len(array) != len(values):
            raise ValidationError(
                LENGTHS_DIFFER.format(name=name, field=field_name, got=len(array), expected=len(values))
            )
    finite = np.isfinite(values)
    if not finite.all():
        index = int(np.argmin(finite))
        raise ValidationError(NOT_FINITE.format(name=name, value=values[index], index=index))
    if steps is not None and len(steps) and steps.min() < AUTO_STEP:
        index = int(np.argmin(steps))
        raise ValidationError(BAD_STEP.format(name=name, value=int(steps[index]), index=index))
    if times is not None and not np.isfinite(times).all():
        index = int(np.argmin(np.isfinite(times)))
        raise ValidationError(BAD_TIME.format(name=name, value=times[index], index=index))


def _cell(name: str, index: int, key: Any, value: Any) -> Any:
    if not isinstance(key, str) or not key or len(key) > limits.MAX_NAME_LENGTH:
        raise ValidationError(
            BAD_ROW.format(
                index=index,
                problem=f"cell names are strings of 1 to {limits.MAX_NAME_LENGTH} characters",
            )
        )
    if value is None or type(value) in (bool, int):
        return value
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is str and len(value) <= limits.MAX_CELL_TEXT_LENGTH:
        return value
    kind = "not finite" if type(value) is float else _kind(value)
    if type(value) is str:
        kind = f"a string longer than {limits.MAX_CELL_TEXT_LENGTH} characters"
    raise ValidationError(BAD_CELL.format(index=index, name=name, key=key, kind=kind))


def _rows(entries: Any, now: float) -> list[RowsBatch]:
    if not isinstance(entries, list):
        raise ValidationError(BAD_BODY)
    tables: dict[str, RowsBatch] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValidationError(BAD_ROW.format(index=index, problem="a row is an object with 'name' and 'cells'"))
        name = _check_name(entry.get("name"))
        cells = entry.get("cells")
        if not isinstance(cells, dict) or len(cells) > limits.MAX_ROW_CELLS:
            raise ValidationError(
                BAD_ROW.format(
                    index=index,
                    problem=f"'cells' is an object of at most {limits.MAX_ROW_CELLS} cells",
                )
            )
        step = entry.get("step")
        if step is not None and (type(step) is not int or not 0 <= step <= _INT64_MAX):
            raise ValidationError(BAD_ROW.format(index=index, problem=f"step {step!r} is not a non-negative integer"))
        when = entry.get("time", now)
        if type(when) not in (int, float) or not math.isfinite(when):
            raise ValidationError(BAD_ROW.format(index=index, problem=f"time {when!r} is not a number of seconds"))
        checked = {key: _cell(name, index, key, value) for key, value in cells.items()}
        tables.setdefault(name, RowsBatch(name)).rows.append({"step": step, "time": float(when), "cells": checked})
    return list(tables.values())


def _tags(given: Any) -> dict[str, str]:
    if not isinstance(given, dict):
        raise ValidationError(BAD_BODY)
    for key, value in given.items():
        _check_name(key, BAD_TAG_KEY)
        if not isinstance(value, str) or len(value) > limits.MAX_TAG_VALUE_LENGTH:
            kind = _kind(value) if not isinstance(value, str) else f"{len(value)} characters long"
            raise ValidationError(TAG_NOT_STRING.format(key=key, kind=kind, limit=limits.MAX_TAG_VALUE_LENGTH))
    return dict(given)


def parse_batch(body: Any, *, now: float | None = None) -> MetricsBatch:
    """A validated batch from the decoded JSON body; a ValidationError names the first problem."""
    now = time.time() if now is None else now
    if not isinstance(body, dict) or not set(body) <= {"rank", "metrics", "rows", "tags"}:
        raise ValidationError(BAD_BODY)
    rank = body.get("rank", 0)
    if type(rank) is not int or not 0 <= rank <= limits.MAX_RANK:
        raise ValidationError(BAD_RANK.format(got=rank))
    metrics = body.get("metrics") or []
    if not isinstance(metrics, list):
        raise ValidationError(BAD_BODY)
    merged: dict[str, SeriesBatch] = {}
    for entry in metrics:
        series = _series(entry, now)
        if series.name in merged:
            merged[series.name] = _concat(merged[series.name], series)
        else:
            merged[series.name] = series
    batch = MetricsBatch(
        rank=rank,
        series=list(merged.values()),
        tables=_rows(body.get("rows") or [], now),
        tags=_tags(body.get("tags") or {}),
    )
    if batch.size > limits.MAX_POINTS_PER_REQUEST:
        raise ValidationError(TOO_MANY_IN_REQUEST.format(count=batch.size, limit=limits.MAX_POINTS_PER_REQUEST))
    return batch


def _concat(first: SeriesBatch, second: SeriesBatch) -> SeriesBatch:
    if (first.steps is None) != (second.steps is None):
        raise ValidationError(f"Metric {first.name!r} is sent twice, once with steps and once without.")
    return SeriesBatch(
        name=first.name,
        description=second.description or first.description,
        values=np.concatenate([first.values, second.values]),
        steps=None if first.steps is None else np.concatenate([first.steps, second.steps]),
        times=np.concatenate([first.times, second.times]),
    )


# ---------------------------------------------------------------- storing


def metrics_ingest(*, access: Access, run: Run, batch: MetricsBatch) -> IngestResult:
    """Store a batch of one rank of a run, within the per-run limits, then broadcast it."""
    access.require(Action.WRITE)
    live: dict[str, Any] = {"rank": batch.rank, "series": [], "rows": [], "tags": None}
    with transaction.atomic():
        # One writer per run at a time: the per-run limits below are then exact.
        # Its parameters are read only when it is tagged (its params. cells show a tag of their name).
        locked = (
            Run.objects.select_for_update()
            .only("id", "run_id", "workspace_id", "experiment_id", "tags", "parent_id")
            .get(pk=run.pk)
        )
        existing = _series_for(locked, batch)
        _check_limits(locked, batch, existing)
        for series_batch in batch.series:
            series = existing.get(series_batch.name) or _series_create(locked, batch.rank, series_batch.name)
            live["series"].append(_append_points(series, series_batch))
        for table in batch.tables:
            series = existing.get(table.name) or _series_create(locked, batch.rank, table.name, kind=SeriesKind.TABLE)
            live["rows"].extend(_append_rows(series, table))
        if batch.tags:
            locked.tags = {**locked.tags, **batch.tags}
            locked.save(update_fields=["tags"])
            run_values_sync(locked)
            live["tags"] = locked.tags
        run_pk = run.pk
        transaction.on_commit(lambda: publish_metrics(run_pk, live))
        if batch.series:
            events.metrics_logged.notify(locked)
    return IngestResult(
        points=sum(len(s.values) for s in batch.series),
        rows=sum(len(t.rows) for t in batch.tables),
        tags=len(batch.tags),
    )


def _series_for(run: Run, batch: MetricsBatch) -> dict[str, MetricSeries]:
    names = [s.name for s in batch.series] + [t.name for t in batch.tables]
    if not names:
        return {}
    found = {s.name: s for s in MetricSeries.objects.filter(run=run, rank=batch.rank, name__in=names)}
    kinds = {s.name: SeriesKind.SCALAR for s in batch.series} | {t.name: SeriesKind.TABLE for t in batch.tables}
    if len(kinds) < len(names):
        duplicate = next(t.name for t in batch.tables if t.name in {s.name for s in batch.series})
        raise ValidationError(KIND_CONFLICT.format(name=duplicate, existing="a metric"))
    unseen = [name for name in kinds if name not in found]
    # A name this rank already has keeps its kind: other ranks are read only for new names.
    other_rank_kinds = (
        dict(MetricSeries.objects.filter(run=run, name__in=unseen).exclude(rank=batch.rank).values_list("name", "kind"))
        if unseen
        else {}
    )
    for name, kind in kinds.items():
        existing_kind = found[name].kind if name in found else other_rank_kinds.get(name)
        if existing_kind is not None and existing_kind != kind:
            label = "a table (run.log_row)" if existing_kind == SeriesKind.TABLE else "a metric (run.log)"
            raise ValidationError(KIND_CONFLICT.format(name=name, existing=label))
    return found


def _check_limits(run: Run, batch: MetricsBatch, existing: dict[str, MetricSeries]) -> None:
    new_names = {s.name for s in batch.series} | {t.name for t in batch.tables}
    new_names -= set(existing)
    if new_names:
        known = set(MetricSeries.objects.filter(run=run).values_list("name", flat=True).distinct())
        total = len(known | new_names)
        if total > limits.MAX_NAMES_PER_RUN:
            raise ValidationError(TOO_MANY_NAMES.format(run_id=run.run_id, total=total, limit=limits.MAX_NAMES_PER_RUN))
    totals = dict(
        MetricSeries.objects.filter(run=run)
        .values_list("kind")
        .annotate(total=Sum("count"))
        .values_list("kind", "total")
    )
    points = sum(len(s.values) for s in batch.series)
    if points and totals.get(SeriesKind.SCALAR, 0) + points > limits.MAX_POINTS_PER_RUN:
        total = totals.get(SeriesKind.SCALAR, 0) + points
        raise ValidationError(TOO_MANY_POINTS.format(run_id=run.run_id, total=total, limit=limits.MAX_POINTS_PER_RUN))
    rows = sum(len(t.rows) for t in batch.tables)
    if rows and totals.get(SeriesKind.TABLE, 0) + rows > limits.MAX_ROWS_PER_RUN:
        total = totals.get(SeriesKind.TABLE, 0) + rows
        raise ValidationError(TOO_MANY_ROWS.format(run_id=run.run_id, total=total, limit=limits.MAX_ROWS_PER_RUN))
    if batch.tags:
        total = len(set(run.tags) | set(batch.tags))
        if total > limits.MAX_TAGS_PER_RUN:
            raise ValidationError(TOO_MANY_TAGS.format(run_id=run.run_id, total=total, limit=limits.MAX_TAGS_PER_RUN))


def _series_create(run: Run, rank: int, name: str, kind: str = SeriesKind.SCALAR) -> MetricSeries:
    return MetricSeries.objects.create(
        run=run, experiment_id=run.experiment_id, workspace_id=run.workspace_id, name=name, rank=rank, kind=kind
    )


def _append_points(series: MetricSeries, batch: SeriesBatch) -> dict[str, Any]:
    count = len(batch.values)
    first_index = series.count
    if batch.steps is None:
        start = 0 if series.last_step is None else series.last_step + 1
        steps = np.arange(start, start + count, dtype=np.int64)
    else:
        steps = fill_steps(batch.steps, series.last_step)
    if count:
        steps_bytes = steps.astype("<i8").tobytes()
        values_bytes = batch.values.astype("<f8").tobytes()
        times_bytes = batch.times.astype("<f8").tobytes()
        low, high = int(steps.min()), int(steps.max())
        last = (
            MetricChunk.objects.filter(series=series).order_by("-first_index").first()
            if count < limits.CHUNK_POINTS
            else None
        )
        if last is not None and last.count + count <= limits.CHUNK_POINTS:
            # Packed little-endian arrays: appending points is appending bytes.
            last.steps = bytes(last.steps) + steps_bytes
            last.values = bytes(last.values) + values_bytes
            last.times = bytes(last.times) + times_bytes
            last.count += count
            last.min_step = min(last.min_step, low)
            last.max_step = max(last.max_step, high)
            last.save(update_fields=["steps", "values", "times", "count", "min_step", "max_step"])
        else:
            MetricChunk.objects.create(
                series=series,
                first_index=first_index,
                count=count,
                min_step=low,
                max_step=high,
                steps=steps_bytes,
                values=values_bytes,
                times=times_bytes,
            )
        series.count += count
        series.last_step = int(steps[-1])
        final = float(batch.values[-1])
        # NaN is kept in the points only (SQLite would store it as NULL anyway): a series with
        # points and no last value ended on NaN (MetricSeries.final_value). ±inf is stored as is.
        series.last_value = None if math.isnan(final) else final
        series.last_time = float(batch.times[-1])
        numbers = batch.values[~np.isnan(batch.values)]
        if len(numbers):
            low_value, high_value = float(numbers.min()), float(numbers.max())
            series.min_value = low_value if series.min_value is None else min(series.min_value, low_value)
            series.max_value = high_value if series.max_value is None else max(series.max_value, high_value)
    if batch.description:
        series.description = batch.description
    series.save()
    return _live_points(series, first_index, steps, batch.values, batch.times)


def _live_points(
    series: MetricSeries, first_index: int, steps: np.ndarray, values: np.ndarray, times: np.ndarray
) -> dict[str, Any]:
    """What viewers get of a batch: every point, or an even sample (with positions) of a big one."""
    payload: dict[str, Any] = {
        "name": series.name,
        "first": first_index,
        "count": series.count,
        "description": series.description,
    }
    if len(values) > LIVE_POINTS_PER_SERIES:
        # Evenly spaced, ends kept: viewers redraw from LTTB data when they hold too many points,
        # and LTTB here would cost more than storing the batch.
        keep = np.linspace(0, len(values) - 1, LIVE_POINTS_PER_SERIES).astype(np.int64)
        steps, values, times = steps[keep], values[keep], times[keep]
        payload["index"] = (keep + first_index).tolist()
    payload.update(steps=steps.tolist(), values=json_numbers(values), times=times.tolist())
    return payload


def _append_rows(series: MetricSeries, table: RowsBatch) -> list[dict[str, Any]]:
    rows = []
    previous = -1 if series.last_step is None else series.last_step
    for offset, row in enumerate(table.rows):
        step = row["step"] if row["step"] is not None else previous + 1
        previous = step
        rows.append(
            MetricRow(
                series=series,
                index=series.count + offset,
                step=step,
                time=row["time"],
                cells=row["cells"],
            )
        )
    MetricRow.objects.bulk_create(rows)
    series.count += len(rows)
    series.last_step = rows[-1].step
    series.last_time = rows[-1].time
    series.save()
    return [
        {"name": series.name, "index": r.index, "step": r.step, "time": r.time, "cells": r.cells}
        for r in rows[-LIVE_ROWS:]
    ]
