"""The runs table of an experiment or of a whole workspace: the columns a user picks, a page of runs
(filtered, sorted, by keyset) and what its live updates read.

Sorted by a metric, a page walks the series' (scope, name, rank, value) index from its cursor and
keeps the runs the filter accepts (a correlated EXISTS each), then, past the last run with the
metric, the runs without it, newest first. Sorted by start, status, user or name, it walks the
run's (scope, column, id) index the same way; by a parameter or tag, the RunValue (scope, kind,
key, number, run) index for its numbers, then (scope, kind, key, text, run) for its other values.
A duration is a finished run's (a running one's still grows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.expressions import Combinable

from metrics.models import MetricSeries, SeriesKind
from metrics.run_filter import (
    STATS,
    Clause,
    apply_clauses,
    few_runs,
    metric_and_stat,
    metric_condition,
    parse,
    value_condition,
)
from runs.expressions import SecondsBetween
from runs.models import Experiment, Run, RunValue
from runs.parameters import PARAM, TAG, parameters_of
from runs.selectors import run_parameters
from trainhub.workspaces.models import Workspace

PAGE_SIZE = 50
MAX_COLUMNS = 40
MAX_KEY_LENGTH = 300
MAX_KEYS = 200
MAX_METRIC_NAMES = 200
DEFAULT_METRICS = 4
MAX_USERS = 1000
BAD_CURSOR = "This page link is out of date: the table starts again from its first page."

RUN_COLUMNS = {"user": "User", "started": "Started", "duration": "Duration", "parameters": "Parameters"}
# What a table can be sorted by besides its chosen columns: the two it always shows.
ALWAYS_SHOWN = {"name": "Run", "status": "Status"}
SORT_COLUMNS = [
    ("started", "start"),
    ("duration", "duration"),
    ("user", "user"),
    ("status", "status"),
    ("name", "display name"),
]
STAT_NAMES = {value: name for name, value in STATS.items()}

Scope = Experiment | Workspace
HIDDEN_FIELDS = (
    "environment_spec",
    "command",
    "distributed",
    "properties",
    "error_traceback",
    "status_reason",
    "description",
    "token_hash",
)


@dataclass(frozen=True)
class Column:
    """One column of the table; `key` is how the URL names it (`user`, `params.lr`, `tags.team`,
    `metrics.accuracy`, `metrics.accuracy:min`)."""

    key: str
    kind: str  # a RUN_COLUMNS key, "param", "tag" or "metric"
    name: str = ""
    stat: str = ""  # a metric's last_value, min_value or max_value

    @property
    def label(self) -> str:
        if self.kind in RUN_COLUMNS:
            return RUN_COLUMNS[self.kind]
        if self.kind in ALWAYS_SHOWN:
            return ALWAYS_SHOWN[self.kind]
        if self.kind == "metric" and self.stat != STATS["last"]:
            return f"{self.name} ({STAT_NAMES[self.stat]})"
        return self.name

    @property
    def sortable(self) -> bool:
        return self.kind != "parameters"


def column_of(key: str, metric_names: list[str]) -> Column | None:
    """The column a URL names, or None for one it cannot show. A bare metric name (the table's
    first URLs) is that metric's last value."""
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    if key in RUN_COLUMNS:
        return Column(key, key)
    for prefix, kind in (("params.", "param"), ("tags.", "tag")):
        if key.startswith(prefix) and len(key) > len(prefix):
            return Column(key, kind, key[len(prefix) :])
    if key.startswith("metrics.") and len(key) > len("metrics."):
        name, stat = metric_and_stat(key[len("metrics.") :])
        return metric_column(name, stat)
    if key in metric_names:
        return metric_column(key, STATS["last"])
    return None


def sort_of(key: str, metric_names: list[str]) -> Column | None:
    """The column a table's `sort` names: any it can show but all parameters, or its name or status."""
    key = key.strip()
    if key in ALWAYS_SHOWN:
        return Column(key, key)
    column = column_of(key, metric_names)
    return column if column is not None and column.sortable else None


def metric_column(name: str, stat: str) -> Column:
    suffix = "" if stat == STATS["last"] else ":" + STAT_NAMES[stat]
    return Column(f"metrics.{name}{suffix}", "metric", name, stat)


def chosen_columns(keys: list[str], metric_names: list[str]) -> list[Column]:
    """The columns named (unknown ones left out), or the default: user, start, duration,
    parameters and the last value of the first few metrics."""
    if not keys:
        keys = [*RUN_COLUMNS, *(f"metrics.{name}" for name in metric_names[:DEFAULT_METRICS])]
    found: dict[str, Column] = {}
    for key in keys:
        column = column_of(key, metric_names)
        if column is not None and column.key not in found:
            found[column.key] = column
    return list(found.values())[:MAX_COLUMNS]


def _runs_of(scope: Scope) -> QuerySet[Run]:
    if isinstance(scope, Experiment):
        return Run.objects.filter(experiment=scope)
    return Run.objects.filter(workspace=scope)


def _runs_among(few: list[int]) -> QuerySet[Run]:
    """The runs of a scope that a filter's rarest clause matches (metrics.run_filter.few_runs), by
    their ids alone: given the scope as well, SQLite walks the scope's runs in the page's order and
    checks each against the list, instead of reading the few it names. Their series and values
    are read the same way (_series_of_runs, RunValue's (run, kind, key) key)."""
    return Run.objects.filter(pk__in=few)


def _series_of(scope: Scope) -> QuerySet[MetricSeries]:
    found = MetricSeries.objects.filter(rank=0, kind=SeriesKind.SCALAR)
    return found.filter(experiment=scope) if isinstance(scope, Experiment) else found.filter(workspace=scope)


def _series_of_runs(few: list[int]) -> QuerySet[MetricSeries]:
    return MetricSeries.objects.filter(run_id__in=few, rank=0, kind=SeriesKind.SCALAR)


def metric_names(scope: Scope) -> list[str]:
    """The names of the scalar metrics rank 0 logged in the scope, one index seek per name (a
    DISTINCT would read the series of every run)."""
    series = _series_of(scope)
    names: list[str] = []
    while len(names) < MAX_METRIC_NAMES:
        following = series.filter(name__gt=names[-1]) if names else series
        name = following.order_by("name").values_list("name", flat=True).first()
        if name is None:
            break
        names.append(name)
    return names


def parameter_and_tag_keys(scope: Scope) -> tuple[list[str], list[str]]:
    """The `params.` and `tags.` column names of the scope's runs, old ones too, to offer as columns
    (a tag is a parameter as well: its `params.` column shows the parameter, else the tag)."""
    return _keys_of(scope, PARAM), _keys_of(scope, TAG)


def _keys_of(scope: Scope, kind: str) -> list[str]:
    """The distinct keys of the scope's `kind` values: one seek per key on each of the two partial
    (scope, kind, key, ...) indexes, where a DISTINCT would read every row (SQLite also reads the
    row a seek of the text index finds, to check that index's condition, one per key)."""
    keys: set[str] = set()
    for segment in VALUE_SEGMENTS:
        values = _values_of(scope).filter(segment.has, kind=kind)
        last = None
        for _ in range(MAX_KEYS):
            following = values if last is None else values.filter(key__gt=last)
            last = following.order_by("key").values_list("key", flat=True).first()
            if last is None:
                break
            keys.add(last)
    return sorted(keys)[:MAX_KEYS]


@dataclass
class TablePage:
    runs: list[Run]
    next_cursor: str | None
    cursor_error: str | None = None
    cells: dict[int, dict[str, Any]] = field(default_factory=dict)


def runs_page(
    scope: Scope,
    *,
    expression: str = "",
    sort: Column | None = None,
    descending: bool = False,
    cursor: str = "",
    limit: int = PAGE_SIZE,
) -> TablePage:
    """A page of the scope's runs matching `expression` (raises FilterError), newest first or by
    a column (runs without its value last, newest first). `cursor` is the `next_cursor` of the
    page before."""
    clauses = parse(expression)
    few = few_runs(clauses, _values_of(scope), _series_of(scope))
    runs = apply_clauses(_runs_of(scope) if few is None else _runs_among(few), clauses)
    if sort is None or not sort.sortable:
        return _newest_first(runs, cursor, limit)
    if sort.kind == "metric":
        return _by_metric(scope, runs, clauses, few, sort, descending, cursor, limit)
    if sort.kind in ("param", "tag"):
        return _by_table_value(scope, runs, clauses, few, sort, descending, cursor, limit)
    segments = _segments_of(sort)
    without = runs
    for segment in segments:
        without = without.exclude(segment.has)
    return _by_segments(runs, "pk", segments, without, descending, cursor, limit)


def newer_runs(scope: Scope, newer_than: int, *, expression: str = "") -> list[Run]:
    """The scope's runs after run `newer_than` matching `expression` (raises FilterError), newest
    first, at most a page."""
    runs = apply_clauses(_runs_of(scope), parse(expression)).filter(id__gt=newer_than)
    return list(_shown(runs).order_by("-id")[:PAGE_SIZE])


def _shown(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Only what the table shows: a run's other JSON fields cost a decode each, 350 a page."""
    return runs.select_related("created_by", "experiment").defer(*HIDDEN_FIELDS)


def _newest_first(runs: QuerySet[Run], cursor: str, limit: int) -> TablePage:
    error = None
    if cursor:
        if cursor.isdigit():
            runs = runs.filter(id__lt=int(cursor))
        else:
            error = BAD_CURSOR
    page = list(_shown(runs).order_by("-id")[: limit + 1])
    following = str(page[limit - 1].pk) if len(page) > limit else None
    return TablePage(page[:limit], following, error)


def _by_metric(
    scope: Scope,
    runs: QuerySet[Run],
    clauses: list[Clause],
    few: list[int] | None,
    sort: Column,
    descending: bool,
    cursor: str,
    limit: int,
) -> TablePage:
    stat = sort.stat
    series = (_series_of(scope) if few is None else _series_of_runs(few)).filter(
        name=sort.name, **{f"{stat}__isnull": False}
    )
    sorted_on = [c for c in clauses if c.metric == (sort.name, stat) and not c.negate]
    for clause in sorted_on:
        # The same condition on the series row itself bounds the index range that is walked.
        series = series.filter(**{f"{stat}__{clause.lookup}": clause.number})
    if clauses:
        series = series.filter(Exists(runs.filter(pk=OuterRef("run_id"))))
    # A metric clause on the sorted metric (= or !=) keeps only runs that have it: none come after.
    requires_metric = any(c.metric is not None and c.metric[0] == sort.name for c in clauses)
    error = None
    ids: list[int] = []
    following: str | None = None
    without_only = cursor == "none" or (cursor.startswith("none_") and cursor[5:].isdigit())
    without_after = int(cursor[5:]) if cursor.startswith("none_") and without_only else None
    if not without_only:
        if cursor:
            value_text, _, series_text = cursor.rpartition("_")
            try:
                value, series_pk = float(value_text), int(series_text)
            except ValueError:
                error = BAD_CURSOR
            else:
                if descending:
                    series = series.filter(**{f"{stat}__lte": value}).filter(
                        Q(**{f"{stat}__lt": value}) | Q(pk__lt=series_pk)
                    )
                else:
                    series = series.filter(**{f"{stat}__gte": value}).filter(
                        Q(**{f"{stat}__gt": value}) | Q(pk__gt=series_pk)
                    )
        order = (F(stat).desc(), "-pk") if descending else (F(stat).asc(), "pk")
        found = list(series.order_by(*order).values_list("pk", "run_id", stat)[: limit + 1])
        ids = [run_pk for _, run_pk, _ in found[:limit]]
        if len(found) > limit:
            series_pk, _, value = found[limit - 1]
            following = f"{value!r}_{series_pk}"
    if following is None and not requires_metric:
        following = _fill_with_runs_without(runs.exclude(metric_condition(sort.name, stat)), without_after, ids, limit)
    found_runs = _shown(Run.objects.all()).in_bulk(ids)
    return TablePage([found_runs[pk] for pk in ids], following, error)


def _fill_with_runs_without(without, without_after: int | None, ids: list[int], limit: int) -> str | None:
    """The rest of the page from the runs without the sorted value, newest first (after the
    cursor's run when it is among them), added to `ids`; the cursor of the next page, if any."""
    if without_after is not None:
        without = without.filter(id__lt=without_after)
    room = limit - len(ids)
    more = list(without.order_by("-id").values_list("pk", flat=True)[: room + 1])
    ids += more[:room]
    if len(more) > room:
        return f"none_{more[room - 1]}" if room else "none"
    return None


@dataclass(frozen=True)
class Segment:
    """Runs holding one kind of value of the sorted column (`has`), in the order of `value`;
    `read` turns a value written into a cursor back into one SQL compares."""

    has: Q
    value: Combinable
    read: Callable[[Any], Any] = lambda value: value


def _segments_of(sort: Column) -> list[Segment]:
    """The runs that have a value of `sort`, in the order it sorts them (ascending)."""
    if sort.kind == "started":
        return [Segment(Q(started_at__isnull=False), F("started_at"), datetime.fromisoformat)]
    if sort.kind == "duration":
        finished = Q(started_at__isnull=False, ended_at__isnull=False)
        return [Segment(finished, SecondsBetween("ended_at", "started_at"), float)]
    if sort.kind == "user":
        # A segment per user by name, each walking the (scope, user, id) index: ordering by the
        # joined user name sorted every run of the scope (100 ms at 100,000 runs).
        users = get_user_model().objects.order_by(get_user_model().USERNAME_FIELD).values_list("pk", flat=True)
        return [Segment(Q(created_by=pk), F("pk"), int) for pk in users[:MAX_USERS]]
    if sort.kind == "status":
        return [Segment(Q(status__isnull=False), F("status"))]
    if sort.kind == "name":
        return [Segment(~Q(display_name=""), F("display_name"))]
    raise ValueError(f"{sort.key!r} is not a run's own column")


def _values_of(scope: Scope) -> QuerySet[RunValue]:
    if isinstance(scope, Experiment):
        return RunValue.objects.filter(experiment=scope)
    return RunValue.objects.filter(workspace=scope)


# A parameter's or tag's values: its numbers as numbers, then the others as text.
VALUE_SEGMENTS = [
    Segment(Q(number__isnull=False), F("number"), float),
    Segment(Q(number__isnull=True), F("text")),
]


def _by_table_value(
    scope: Scope,
    runs: QuerySet[Run],
    clauses: list[Clause],
    few: list[int] | None,
    sort: Column,
    descending: bool,
    cursor: str,
    limit: int,
) -> TablePage:
    values = (_values_of(scope) if few is None else RunValue.objects.filter(run_id__in=few)).filter(
        kind=sort.kind, key=sort.name
    )
    if clauses:
        values = values.filter(Exists(runs.filter(pk=OuterRef("run_id"))))
    without = runs.exclude(value_condition(sort.kind, sort.name))
    return _by_segments(values, "run_id", VALUE_SEGMENTS, without, descending, cursor, limit)


def _by_segments(
    rows: QuerySet[Any],
    run_field: str,
    segments: list[Segment],
    without: QuerySet[Run],
    descending: bool,
    cursor: str,
    limit: int,
) -> TablePage:
    """Each segment's `rows` (runs, or rows naming a run by `run_field`) by (value, run), descending
    segments in reverse, then the runs `without` a value, newest first. A cursor names its segment,
    the value and the id of the page's last run."""
    order = list(reversed(segments)) if descending else segments
    error = None
    start, after = 0, None
    without_after: int | None = None
    if cursor.startswith("none_") and cursor[5:].isdigit():
        start, without_after = len(order), int(cursor[5:])
    elif cursor == "none":
        start = len(order)
    elif cursor:
        try:
            start, *rest = json.loads(cursor)
            order[start]
            after = (order[start].read(rest[0]), int(rest[1])) if rest else None
        except (ValueError, TypeError, IndexError, KeyError):
            error, start, after = BAD_CURSOR, 0, None
    ids: list[int] = []
    following: str | None = None
    for position in range(start, len(order)):
        segment = order[position]
        found = rows.filter(segment.has).annotate(sort_value=segment.value)
        if after is not None and position == start:
            value, pk = after
            if descending:
                found = found.filter(sort_value__lte=value).filter(
                    Q(sort_value__lt=value) | Q(**{f"{run_field}__lt": pk})
                )
            else:
                found = found.filter(sort_value__gte=value).filter(
                    Q(sort_value__gt=value) | Q(**{f"{run_field}__gt": pk})
                )
        by = ("-sort_value", f"-{run_field}") if descending else ("sort_value", run_field)
        room = limit - len(ids)
        walked = list(found.order_by(*by).values_list(run_field, "sort_value")[: room + 1])
        ids += [pk for pk, _ in walked[:room]]
        if len(walked) > room:
            if room:  # the page ends inside this segment
                pk, value = walked[room - 1]
                written = value.isoformat() if isinstance(value, datetime) else value
                following = json.dumps([position, written, pk], separators=(",", ":"))
            else:  # the page ended with the segment before
                following = json.dumps([position])
            break
    if following is None:
        following = _fill_with_runs_without(without, without_after, ids, limit)
    found_runs = _shown(Run.objects.all()).in_bulk(ids)
    return TablePage([found_runs[pk] for pk in ids], following, error)


def metric_text(value: float | None) -> str:
    """A metric value as people read it: six significant digits; NaN, inf and -inf as such."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    return f"{value:.6g}"


def duration_text(seconds: float | None) -> str:
    """As the page's script counts it up (static/trainhub/times.js)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    hours, minutes = whole // 3600, (whole % 3600) // 60
    return (f"{hours} h " if hours else "") + f"{minutes} min {whole % 60} s"


def metric_values(run_pks: list[int], columns: list[Column]) -> dict[int, dict[str, MetricSeries]]:
    """Each run's rank-0 series of the metric columns, by name: one query for the page."""
    names = sorted({c.name for c in columns if c.kind == "metric"})
    found: dict[int, dict[str, MetricSeries]] = {pk: {} for pk in run_pks}
    if names and run_pks:
        for series in MetricSeries.objects.filter(
            run_id__in=run_pks, name__in=names, rank=0, kind=SeriesKind.SCALAR
        ).only("run_id", "name", "last_value", "min_value", "max_value"):
            found[series.run_id][series.name] = series
    return found


def cells_of(run: Run, columns: list[Column], series: dict[str, MetricSeries]) -> list[dict[str, Any]]:
    """What each column shows of a run: `value` (a number, text or None) and, for a metric's last
    value, the series (for its min and max)."""
    cells: list[dict[str, Any]] = []
    for column in columns:
        cell: dict[str, Any] = {"column": column}
        if column.kind == "user":
            cell["value"] = run.created_by.get_username() if run.created_by else ""
        elif column.kind == "started":
            cell["value"] = run.started_at
        elif column.kind == "duration":
            cell["value"] = run.duration_seconds
        elif column.kind == "parameters":
            cell["value"] = run_parameters(run)
        elif column.kind == "param":
            cell["value"] = (run.parameters or parameters_of(run.arguments)).get(
                column.name, (run.tags or {}).get(column.name)
            )
        elif column.kind == "tag":
            cell["value"] = (run.tags or {}).get(column.name)
        else:
            found = series.get(column.name)
            cell["value"] = getattr(found, column.stat) if found else None
            cell["series"] = found if column.stat == STATS["last"] else None
        cells.append(cell)
    return cells


def table_states(workspace: Workspace, run_ids: list[str], columns: list[Column]) -> dict[str, dict[str, Any]]:
    """What the live table changes of up to PAGE_SIZE * 2 runs: status, duration (seconds, as
    runs.selectors.run_states gives every list) and metric cells (values as the page prints them)."""
    runs = [
        run
        for run in Run.objects.filter(run_id__in=run_ids[: PAGE_SIZE * 2]).only(
            "run_id", "workspace_id", "status", "started_at", "ended_at"
        )
        # Checked here, not in SQL: given both, SQLite walks the workspace's runs instead of the
        # run_id index (93 of 100 ms at 100,000 runs).
        if run.workspace_id == workspace.pk
    ]
    values = metric_values([run.pk for run in runs], columns)
    states = {}
    for run in runs:
        shown: dict[str, str] = {}
        for column in columns:
            if column.kind != "metric":
                continue
            found = values[run.pk].get(column.name)
            shown[column.key] = metric_text(getattr(found, column.stat) if found else None)
            if found and column.stat == STATS["last"]:
                shown[column.key + ":range"] = f"{metric_text(found.min_value)} – {metric_text(found.max_value)}"
        states[run.run_id] = {
            "status": run.status,
            "final": run.is_final,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "duration": run.duration_seconds,
            "metrics": shown,
        }
    return states
