"""MLflow's `filter_string` and `order_by` of runs/search, read into a query on TrainHub's runs.

The grammar is MLflow's: clauses joined by AND, each `<entity>.<key> <comparator> <value>` where the
entity is `metrics` (a number, compared with the run's last value of rank 0: = != < > <= >=),
`params` or `tags` (a quoted string: = != LIKE ILIKE), or `attributes` (`status`, `run_name`,
`run_id`, `user_id` take a quoted string with = != LIKE ILIKE, `run_id` also IN (...);
`start_time` and `end_time` a number of milliseconds with any comparator). Keys with spaces or dots
are quoted with backticks or double quotes (metrics.`val loss`). The singular and abbreviated
entity names MLflow accepts (metric, param, parameter, tag, attr, attribute, run) work too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from metrics.models import MetricSeries, SeriesKind
from metrics.run_filter import fewest, value_condition, value_rows
from mlflow_compat.access import invalid
from runs.models import Run, RunStatus, RunValue
from runs.parameters import PARAM, TAG
from trainhub.workspaces.models import Workspace

ENTITIES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
STRING_ATTRIBUTES = {"status", "run_name", "run_id", "user_id"}
TIME_ATTRIBUTES = {"start_time": "started_at", "end_time": "ended_at"}
NUMERIC = ("=", "!=", "<", ">", "<=", ">=")
TEXTUAL = ("=", "!=", "LIKE", "ILIKE")
LOOKUPS = {"<": "lt", ">": "gt", "<=": "lte", ">=": "gte", "=": "exact", "!=": "exact"}
MAX_CLAUSES = 20

# MLflow's statuses of a run, as TrainHub's (mlflow_compat.selectors.STATUS read backwards).
STATUSES = {
    "SCHEDULED": [RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.STARTING],
    "RUNNING": [RunStatus.RUNNING, RunStatus.FINALIZING],
    "FINISHED": [RunStatus.COMPLETED],
    "FAILED": [RunStatus.FAILED],
    "KILLED": [RunStatus.CANCELED],
}

TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<identifier>[A-Za-z_][\w]*\.(?:`[^`]+`|"[^"]+"|[\w.\-/:]+))
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<comparator>>=|<=|!=|<>|=|<|>)
      | (?P<word>[A-Za-z]+)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)

BAD_FILTER = "filter_string {filter!r} is not MLflow's search syntax: {problem}."
SYNTAX_HELP = (
    "write clauses such as metrics.accuracy > 0.9 AND params.lr = '0.01' AND tags.team != 'birds' "
    "AND attributes.status = 'FINISHED', joined by AND"
)
BAD_ORDER = (
    "order_by {clause!r} is not one MLflow reads: give metrics.<key>, params.<key>, tags.<key> or "
    "attributes.<start_time|end_time|run_name|status|run_id|user_id>, then optionally ASC or DESC."
)


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"unexpected {text[position:].strip()[:30]!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _identifier(text: str) -> tuple[str, str]:
    entity, _, key = text.partition(".")
    kind = ENTITIES.get(entity.lower())
    if kind is None:
        raise ValueError(f"{entity!r} is not an entity: use metrics., params., tags. or attributes.")
    if len(key) >= 2 and key[0] == key[-1] and key[0] in '`"':
        key = key[1:-1]
    return kind, key


def _string(token: tuple[str, str], what: str) -> str:
    kind, text = token
    if kind != "string":
        raise ValueError(f"{what} compares with a quoted string, not {text!r}")
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _number(token: tuple[str, str], what: str) -> float:
    kind, text = token
    if kind != "number":
        raise ValueError(f"{what} compares with a number, not {text!r}")
    return float(text)


def _like(pattern: str) -> str:
    """SQL LIKE's pattern (% any characters, _ one) as a regular expression matching the whole value,
    as LIKE does: a database's regex lookup finds a match anywhere in it."""
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return "(?s)^" + "".join(parts) + "$"


def _text_condition(field: Any, comparator: str, value: str) -> Q:
    if comparator == "LIKE":
        return Q(**{f"{field}__regex": _like(value)})
    if comparator == "ILIKE":
        return Q(**{f"{field}__iregex": _like(value)})
    condition = Q(**{field: value})
    return ~condition if comparator == "!=" else condition


def _comparator(tokens: list[tuple[str, str]], at: int) -> str:
    kind, text = tokens[at] if at < len(tokens) else ("", "")
    if kind == "comparator":
        return "!=" if text == "<>" else text
    if kind == "word" and text.upper() in ("LIKE", "ILIKE", "IN"):
        return text.upper()
    if kind == "word" and text.upper() == "NOT" and at + 1 < len(tokens) and tokens[at + 1][1].upper() == "IN":
        return "NOT IN"
    raise ValueError(f"expected a comparator after the key, got {text!r}" if text else "a clause ends too soon")


def apply_mlflow_filter(
    workspace: Workspace, experiments: list[int], text: str, only: int | None = None
) -> QuerySet[Run]:
    """The runs of the workspace's `experiments` (or run `only`) that MLflow's filter_string `text`
    matches; an INVALID_PARAMETER_VALUE MlflowError when it cannot be read. Where a params., tags.
    or metrics. clause matches few runs, the search starts from those (metrics.run_filter.fewest),
    read off its index, so one no run matches does not look at every run of the experiments."""
    runs = Run.objects.filter(workspace=workspace, experiment_id__in=experiments)
    if only is not None:
        runs = runs.filter(pk=only)
    if not text.strip():
        return runs
    try:
        tokens = _tokens(text)
        found, candidates = _apply(runs, tokens, experiments)
        few = fewest(candidates)
        if few is None:
            return found
        # By their ids alone (they are the experiments' runs): given the experiments too, SQLite
        # walks their runs newest first and checks each against the list.
        return _apply(Run.objects.filter(pk__in=[pk for pk in few if only in (None, pk)]), tokens, [])[0]
    except ValueError as error:
        raise invalid(BAD_FILTER.format(filter=text, problem=f"{error}; {SYNTAX_HELP}")) from None


def _apply(
    runs: QuerySet[Run], tokens: list[tuple[str, str]], experiments: list[int]
) -> tuple[QuerySet[Run], list[QuerySet[Any]]]:
    """`runs` narrowed by the clauses, and the ids of the runs each clause that can say so matches."""
    at, clauses = 0, 0
    candidates: list[QuerySet[Any]] = []
    while at < len(tokens):
        clauses += 1
        if clauses > MAX_CLAUSES:
            raise ValueError(f"at most {MAX_CLAUSES} clauses")
        kind, text = tokens[at]
        if kind != "identifier":
            raise ValueError(f"a clause starts with <entity>.<key>, not {text!r}")
        entity, key = _identifier(text)
        comparator = _comparator(tokens, at + 1)
        at += 3 if comparator == "NOT IN" else 2
        if comparator in ("IN", "NOT IN"):
            values, at = _list(tokens, at)
            if (entity, key) != ("attributes", "run_id"):
                raise ValueError("IN and NOT IN take attributes.run_id only")
            condition = Q(run_id__in=values)
            runs = runs.exclude(condition) if comparator == "NOT IN" else runs.filter(condition)
        else:
            if at >= len(tokens):
                raise ValueError("a clause ends without a value")
            runs = _clause(runs, entity, key, comparator, tokens[at], clauses)
            if comparator not in ("!=", "LIKE", "ILIKE"):
                candidates += _matching(entity, key, comparator, tokens[at], experiments)
            at += 1
        if at < len(tokens):
            kind, text = tokens[at]
            if kind != "word" or text.upper() != "AND":
                raise ValueError(f"clauses are joined by AND, not {text!r}")
            at += 1
            if at == len(tokens):
                raise ValueError("nothing follows the last AND")
    return runs, candidates


def _matching(
    entity: str, key: str, comparator: str, value: tuple[str, str], experiments: list[int]
) -> list[QuerySet[Any]]:
    """The ids of the runs a clause (=, <, >, <=, >= on a checked value) matches in `experiments`,
    through the index of its rows, where it has one."""
    if entity == "metrics":
        series = MetricSeries.objects.filter(experiment_id__in=experiments, name=key, rank=0, kind=SeriesKind.SCALAR)
        found = series.filter(**{f"last_value__{LOOKUPS[comparator]}": _number(value, key)})
        return [found.values_list("run_id", flat=True)]
    if entity in ("params", "tags"):
        values = RunValue.objects.filter(experiment_id__in=experiments)
        kind = PARAM if entity == "params" else TAG
        return [value_rows(values, (kind,), key, _string(value, key)).values_list("run_id", flat=True)]
    return []


def _list(tokens: list[tuple[str, str]], at: int) -> tuple[list[str], int]:
    if at >= len(tokens) or tokens[at][1] != "(":
        raise ValueError("IN takes a list in parentheses: ('a', 'b')")
    values, at = [], at + 1
    while at < len(tokens):
        values.append(_string(tokens[at], "run_id IN"))
        at += 1
        if at < len(tokens) and tokens[at][1] == ")":
            return values, at + 1
        if at >= len(tokens) or tokens[at][1] != ",":
            raise ValueError("the values of IN are separated by commas and closed by ')'")
        at += 1
    raise ValueError("IN's list is not closed by ')'")


def _clause(
    runs: QuerySet[Run], entity: str, key: str, comparator: str, value: tuple[str, str], index: int
) -> QuerySet[Run]:
    name = f"{entity}.{key}"
    if entity == "metrics":
        if comparator not in NUMERIC:
            raise ValueError(f"{name} takes {', '.join(NUMERIC)}, not {comparator}")
        number = _number(value, name)
        # Correlated on the series' (run, name, rank) key: `run IN (SELECT ...)` read every series.
        series = MetricSeries.objects.filter(run_id=OuterRef("pk"), name=key, rank=0, kind=SeriesKind.SCALAR)
        matching = Exists(series.filter(**{f"last_value__{LOOKUPS[comparator]}": number}))
        if comparator == "!=":
            return runs.filter(Exists(series)).exclude(matching)
        return runs.filter(matching)
    if entity == "attributes" and key in TIME_ATTRIBUTES:
        if comparator not in NUMERIC:
            raise ValueError(f"{name} takes {', '.join(NUMERIC)}, not {comparator}")
        when = datetime.fromtimestamp(_number(value, name) / 1000, tz=UTC)
        field = TIME_ATTRIBUTES[key]
        condition = Q(**{f"{field}__{LOOKUPS[comparator]}": when})
        if comparator == "!=":
            return runs.exclude(condition).exclude(**{f"{field}__isnull": True})
        return runs.filter(condition)
    if comparator not in TEXTUAL:
        raise ValueError(f"{name} takes {', '.join(TEXTUAL)}, not {comparator}")
    text = _string(value, name)
    if entity == "attributes":
        if key not in STRING_ATTRIBUTES:
            known = ", ".join(sorted(STRING_ATTRIBUTES | set(TIME_ATTRIBUTES)))
            raise ValueError(f"{key!r} is not an attribute TrainHub searches ({known})")
        if key == "status":
            if comparator in ("LIKE", "ILIKE") or text.upper() not in STATUSES:
                raise ValueError(f"attributes.status is = or != one of {', '.join(STATUSES)}")
            condition = Q(status__in=STATUSES[text.upper()])
            return runs.exclude(condition) if comparator == "!=" else runs.filter(condition)
        field = {"run_name": "display_name", "run_id": "run_id", "user_id": "created_by__username"}[key]
        return runs.filter(_text_condition(field, comparator, text))
    # Through the runs table's RunValue rows and their (run, kind, key) key, as the portal's filter:
    # reading the JSON of every run of the experiments took ~1 s at 100,000 runs.
    kind = PARAM if entity == "params" else TAG
    if comparator == "!=":
        condition = Q(value_condition(kind, key)) & ~Q(value_condition(kind, key, value=text))
    elif comparator == "=":
        condition = Q(value_condition(kind, key, value=text))
    else:
        lookup = "regex" if comparator == "LIKE" else "iregex"
        condition = Q(value_condition(kind, key, value=_like(text), value_lookup=lookup))
    if kind == PARAM:
        # A parameter's row shows the run's tag of that name where the run has no such parameter (a
        # tag is a parameter in the runs table); MLflow's params are the parameters alone. Only a run
        # with a tag of that name has its parameters read.
        condition &= ~Q(value_condition(TAG, key)) | Q(parameters__has_key=key)
    return runs.filter(condition)


def apply_order(runs: QuerySet[Run], order_by: Any) -> QuerySet[Run]:
    """`runs` in MLflow's order_by (a list of '<entity>.<key> [ASC|DESC]'), newest first after that;
    runs without the value come last either way, as on MLflow's server."""
    if order_by in (None, "", []):
        return runs.order_by("-id")
    clauses = [order_by] if isinstance(order_by, str) else order_by
    if not isinstance(clauses, list) or len(clauses) > MAX_CLAUSES:
        raise invalid(f"order_by is a list of at most {MAX_CLAUSES} clauses.")
    ordering = []
    for index, clause in enumerate(clauses):
        parts = str(clause).strip().rsplit(None, 1)
        descending = len(parts) == 2 and parts[1].upper() == "DESC"
        target = parts[0] if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC") else str(clause).strip()
        try:
            kind, text = _tokens(target)[0] if len(_tokens(target)) == 1 else ("", "")
            if kind != "identifier":
                raise ValueError
            entity, key = _identifier(text)
        except ValueError:
            raise invalid(BAD_ORDER.format(clause=clause)) from None
        alias = f"mlflow_order_{index}"
        if entity == "metrics":
            last = MetricSeries.objects.filter(run=OuterRef("pk"), name=key, rank=0, kind=SeriesKind.SCALAR)
            runs = runs.alias(**{alias: Subquery(last.values("last_value")[:1])})
        elif entity in ("params", "tags"):
            # The JSON of every run, not its RunValue row: a page sorts every run either way, and the
            # row's lookup per run cost more than the read of its JSON (CPU of the query at 20,000
            # runs, 1 or 20 parameters: params. 16.5 / 58 ms by JSON, 27.7 / 72.7 by the row,
            # 22.1 / 65.5 joined; tags. about the same all three ways).
            column = "parameters" if entity == "params" else "tags"
            runs = runs.alias(**{alias: Cast(KeyTextTransform(key, column), TextField())})
        elif key == "start_time":
            runs = runs.alias(**{alias: Coalesce("started_at", "created_at")})
        elif key in ("end_time", "run_name", "status", "run_id", "user_id"):
            field = {"end_time": "ended_at", "run_name": "display_name", "user_id": "created_by__username"}
            runs = runs.alias(**{alias: F(field.get(key, key))})
        else:
            raise invalid(BAD_ORDER.format(clause=clause))
        ordering.append(F(alias).desc(nulls_last=True) if descending else F(alias).asc(nulls_last=True))
    return runs.order_by(*ordering, "-id")
