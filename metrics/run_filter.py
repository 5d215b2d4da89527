"""Filter expressions of the runs table, kept in the page's URL:
`metrics.accuracy > 0.9 and status = Completed and params.lr = 0.01 and tags.optimizer != sgd`.

Clauses joined by `and`; `metrics.<name>` compares the final value of rank 0 with a number
(> >= < <= = !=); `status`, `user`, `tags.<key>` and `params.<key>` (an argument `--key value`
or a tag) take = or !=."""

from __future__ import annotations

import re

from django.db.models import Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from metrics.models import MetricSeries, SeriesKind
from runs.models import Experiment, Run, RunStatus

CLAUSE = re.compile(r"^(?P<field>[A-Za-z_][\w.\-/:]*)\s*(?P<op>>=|<=|!=|==|=|>|<)\s*(?P<value>.+)$")
AND = re.compile(r"\s+and\s+", re.IGNORECASE)
LOOKUPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "=": "exact", "==": "exact", "!=": "exact"}
MAX_CLAUSES = 10

NOT_A_CLAUSE = (
    "{clause!r} is not a filter: write name operator value, e.g. metrics.accuracy > 0.9 or status = Completed."
)
NOT_A_NUMBER = "{clause!r}: metrics compare with a number."
EQUALS_ONLY = "{clause!r}: {field} takes = or != only."
UNKNOWN_STATUS = "{clause!r}: the statuses are " + ", ".join(RunStatus.values) + "."
UNKNOWN_FIELD = "{clause!r}: filter on metrics.<name>, params.<name>, tags.<name>, status or user."
TOO_MANY = f"At most {MAX_CLAUSES} clauses."


class FilterError(ValueError):
    """An expression the runs table cannot read; its message says why."""


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _text(key: str, field: str) -> Cast:
    # Cast: on SQLite a bare key transform compares as JSON, so "0.01" would never equal 0.01.
    return Cast(KeyTextTransform(key, field), TextField())


def apply_filter(runs: QuerySet[Run], expression: str, experiment: Experiment | None = None) -> QuerySet[Run]:
    """`runs` narrowed by `expression`; give the runs' `experiment` when there is one, so that
    metric clauses read one index range instead of every series."""
    clauses = [clause.strip() for clause in AND.split(expression.strip()) if clause.strip()]
    if len(clauses) > MAX_CLAUSES:
        raise FilterError(TOO_MANY)
    for index, clause in enumerate(clauses):
        match = CLAUSE.match(clause)
        if match is None:
            raise FilterError(NOT_A_CLAUSE.format(clause=clause))
        field, op, value = match.group("field"), match.group("op"), _unquote(match.group("value"))
        negate = op == "!="
        if field.startswith("metrics.") and len(field) > len("metrics."):
            try:
                number = float(value)
            except ValueError:
                raise FilterError(NOT_A_NUMBER.format(clause=clause)) from None
            series = MetricSeries.objects.filter(name=field[len("metrics.") :], rank=0, kind=SeriesKind.SCALAR)
            if experiment is not None:
                series = series.filter(experiment=experiment)
            matching = series.filter(**{f"last_value__{LOOKUPS[op]}": number}).values("run_id")
            if negate:
                runs = runs.filter(pk__in=series.values("run_id")).exclude(pk__in=matching)
            else:
                runs = runs.filter(pk__in=matching)
            continue
        if op not in ("=", "==", "!="):
            raise FilterError(EQUALS_ONLY.format(clause=clause, field=field))
        if field == "status":
            status = next((s for s in RunStatus.values if s.lower() == value.lower()), None)
            if status is None:
                raise FilterError(UNKNOWN_STATUS.format(clause=clause))
            condition = Q(status=status)
        elif field == "user":
            condition = Q(created_by__username=value)
        elif field.startswith(("tags.", "params.")) and "." in field:
            kind, key = field.split(".", 1)
            alias = f"filter_{index}"
            runs = runs.alias(**{f"{alias}_tag": _text(key, "tags")})
            condition = Q(**{f"{alias}_tag": value})
            if kind == "params":
                runs = runs.alias(**{f"{alias}_param": _text(key, "parameters")})
                condition |= Q(**{f"{alias}_param": value})
        else:
            raise FilterError(UNKNOWN_FIELD.format(clause=clause))
        runs = runs.exclude(condition) if negate else runs.filter(condition)
    return runs
