"""Metric endpoints of the JSON API: batch ingest from runs, full series, summaries and chart data.

Series are answered as plain JSON responses rather than through response schemas: validating a
million floats through pydantic would cost more than reading them.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from ninja import Router

from metrics import limits, selectors, services
from metrics.jsonvalues import json_number, json_numbers
from metrics.models import SeriesKind
from runs import selectors as run_selectors
from runs.models import Run
from trainhub.api_auth import IN_RUN, SessionAuth, TokenAuth
from trainhub.idempotency.services import answer_once
from trainhub.workspaces.api_access import access

router = Router(tags=["metrics"])

INGEST_DOC = """Store a batch of metrics of one rank of a run, then show it to live viewers.

Body: `{"rank": 0, "metrics": [{"name": "loss", "values": [0.9, 0.7], "steps": [0, 1],
"times": [1700000000.0, 1700000001.5], "description": ""}], "rows": [{"name": "per_class",
"step": 0, "cells": {"cls": 3, "precision": 0.9}}], "tags": {"lr": "0.01"}}` — every key optional;
`steps` default to the series' last step + 1, 2, … (a null step: the previous step + 1);
`times` (seconds since 1970) to now. Instead of JSON lists, a series may carry `values_f64`,
`times_f64` and `steps_i64`: base64 of little-endian float64 / int64 arrays (step -1: the
previous step + 1), which is what the SDK sends.

Values are finite numbers: NaN, inf and -inf are refused (400), as are strings and booleans (those
that MLflow's client logs are kept, and read back as the strings "NaN", "Infinity", "-Infinity").
Names are 1–255 characters; tag values are strings. Limits per request and per run are in
`metrics/limits.py` (by default 200,000 points per request, 50,000,000 points, 1,000 names,
100,000 rows and 500 tags per run).

With an `Idempotency-Key` header (what the SDK sends with each batch), a batch sent again with
the same key, e.g. after the client timed out, is answered as the first time and stored once.
"""


def _run(request: HttpRequest, workspace_name: str, run_id: str) -> tuple[Any, Run]:
    member = access(request, workspace_name)
    return member, run_selectors.run_get(member.workspace, run_id)


def _raw_body(request: HttpRequest) -> bytes:
    declared = request.headers.get("Content-Length") or "0"
    if declared.isdigit() and int(declared) > limits.MAX_BODY_BYTES:
        raise ValidationError(services.BODY_TOO_LARGE.format(limit=limits.MAX_BODY_BYTES))
    # Read the stream ourselves: `request.body` stops at Django's 2.5 MB form-data limit.
    raw = request.read(limits.MAX_BODY_BYTES + 1)
    if len(raw) > limits.MAX_BODY_BYTES:
        raise ValidationError(services.BODY_TOO_LARGE.format(limit=limits.MAX_BODY_BYTES))
    return raw


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError(services.NOT_JSON.format(error=error)) from None


@router.post(
    "/{workspace_name}/runs/{run_id}/metrics",
    # The last flush of a rank stopped because another rank failed arrives when the run is final.
    auth=[TokenAuth(run_tokens=True, ended_grace_seconds=limits.RUN_TOKEN_GRACE_SECONDS), SessionAuth(csrf=True)],
    description=INGEST_DOC,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
def ingest(request: HttpRequest, workspace_name: str, run_id: str) -> JsonResponse:
    member, run = _run(request, workspace_name, run_id)
    raw = _raw_body(request)
    batch = services.parse_batch(_json(raw))

    def ingest_batch() -> tuple[int, dict[str, int]]:
        stored = services.metrics_ingest(access=member, run=run, batch=batch)
        return 200, {"points": stored.points, "rows": stored.rows, "tags": stored.tags}

    status, answer = answer_once(
        request=request, workspace=member.workspace, scope=f"runs/{run.pk}/metrics", body=raw, produce=ingest_batch
    )
    return JsonResponse(answer, status=status)


def _rank(rank: int) -> int:
    if not 0 <= rank <= limits.MAX_RANK:
        raise ValidationError(services.BAD_RANK.format(got=rank))
    return rank


@router.get("/{workspace_name}/runs/{run_id}/metrics", auth=IN_RUN)
def get_metrics(
    request: HttpRequest, workspace_name: str, run_id: str, name: str | None = None, rank: int = 0
) -> JsonResponse:
    """Every point of one rank's metrics (or of one metric), and every row of its tables."""
    _, run = _run(request, workspace_name, run_id)
    series = [selectors.series_get(run, name, _rank(rank))] if name else list(selectors.series_of(run, rank=rank))
    points = selectors.points_by_series([s.pk for s in series if s.kind == SeriesKind.SCALAR])
    found: dict[str, Any] = {}
    for item in series:
        if item.kind == SeriesKind.SCALAR:
            steps, values, times = points[item.pk].every_column()
            found[item.name] = {
                "kind": item.kind,
                "description": item.description,
                "steps": steps.tolist(),
                "values": json_numbers(values),
                "times": times.tolist(),
            }
        else:
            found[item.name] = {
                "kind": item.kind,
                "rows": [{"step": r.step, "time": r.time, "cells": r.cells} for r in selectors.rows_of(item)],
            }
    return JsonResponse({"run_id": run.run_id, "rank": rank, "metrics": found, "tags": run.tags})


@router.get("/{workspace_name}/runs/{run_id}/metrics/summary", auth=IN_RUN)
def get_summary(request: HttpRequest, workspace_name: str, run_id: str) -> JsonResponse:
    """Every series of every rank with its count and final value, and the run's tags."""
    _, run = _run(request, workspace_name, run_id)
    series = [
        {
            "name": s.name,
            "rank": s.rank,
            "kind": s.kind,
            "description": s.description,
            "count": s.count,
            "last_step": s.last_step,
            "last_value": json_number(s.final_value),
            "last_time": s.last_time,
            "min_value": json_number(s.min_value),
            "max_value": json_number(s.max_value),
        }
        for s in selectors.series_of(run)
    ]
    return JsonResponse({"run_id": run.run_id, "ranks": selectors.ranks_of(run), "series": series, "tags": run.tags})


@router.get("/{workspace_name}/runs/{run_id}/metrics/chart", auth=IN_RUN)
def get_chart(
    request: HttpRequest,
    workspace_name: str,
    run_id: str,
    rank: int = 0,
    x: str = "step",
    points: int = selectors.DEFAULT_CHART_POINTS,
    name: str | None = None,
) -> JsonResponse:
    """One rank's scalar metrics, each sorted by x and reduced with LTTB to `points` points."""
    _, run = _run(request, workspace_name, run_id)
    if x not in ("step", "time"):
        raise ValidationError(selectors.BAD_AXIS)
    series = selectors.chart_data(run, rank=_rank(rank), axis=x, max_points=points, names=[name] if name else None)
    return JsonResponse({"run_id": run.run_id, "rank": rank, "x": x, "series": series})
