"""Reads: TrainHub's runs, experiments, metrics and outputs in the shapes of MLflow's REST API."""

from __future__ import annotations

import base64
import math
from typing import Any

from django.db.models import QuerySet

from metrics import selectors as metric_selectors
from metrics.jsonvalues import json_number, json_numbers
from metrics.models import MetricSeries, SeriesKind
from mlflow_compat.access import Caller, invalid, not_found
from mlflow_compat.models import LoggedModel
from mlflow_compat.search import apply_mlflow_filter, apply_order
from runs.models import Experiment, Run, RunStatus
from runs.parameters import parameters_of

EXPERIMENT_NOT_FOUND = "No experiment {what} in this workspace."
MODEL_NOT_FOUND = "No logged model {model_id!r} in this workspace."
BAD_PAGE_TOKEN = "page_token is not one this server handed out."

# TrainHub's statuses, as MLflow names a run's state.
STATUS = {
    RunStatus.QUEUED: "SCHEDULED",
    RunStatus.PREPARING: "SCHEDULED",
    RunStatus.STARTING: "SCHEDULED",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.FINALIZING: "RUNNING",
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELED: "KILLED",
}
# The prefix of MLflow's own tags (mlflow.user, mlflow.source.name, …): kept in the run's properties,
# so that the run's tags show what the script's author tagged.
SYSTEM_TAG_PREFIX = "mlflow."


def _ms(when: Any) -> int | None:
    return int(when.timestamp() * 1000) if when else None


def artifact_uri(run: Run, path: str = "outputs") -> str:
    """Resolved by MLflow's client against its tracking URI, so the workspace's prefix is kept."""
    return f"mlflow-artifacts:/{run.run_id}/{path}"


def run_parameters(run: Run) -> dict[str, str]:
    """MLflow's params of a run: its arguments read as `--name value`, and what it logged."""
    return dict(run.parameters or parameters_of(run.arguments))


def run_info(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "run_uuid": run.run_id,
        "run_name": run.display_name or run.run_id,
        "experiment_id": str(run.experiment_id),
        "user_id": run.created_by.get_username() if run.created_by else "",
        "status": STATUS[RunStatus(run.status)],
        "start_time": _ms(run.started_at or run.created_at),
        "end_time": _ms(run.ended_at),
        "artifact_uri": artifact_uri(run),
        "lifecycle_stage": "active",
    }


def _latest_metrics(runs: list[Run]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, dict[str, dict[str, Any]]] = {run.pk: {} for run in runs}
    series = (
        MetricSeries.objects.filter(run__in=[run.pk for run in runs], kind=SeriesKind.SCALAR, count__gt=0)
        .order_by("-rank")
        .values_list("run_id", "name", "last_value", "last_step", "last_time")
    )
    for run_pk, name, value, step, when in series:
        # Rank 0 last, so it wins where several ranks logged the same name.
        found[run_pk][name] = {
            "key": name,
            # A series with points and no stored last value ended on NaN (MetricSeries.final_value).
            "value": json_number(math.nan if value is None else value),
            "timestamp": int((when or 0) * 1000),
            "step": step or 0,
        }
    return {pk: list(metrics.values()) for pk, metrics in found.items()}


def run_out(run: Run, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if metrics is None:
        metrics = _latest_metrics([run])[run.pk]
    tags = {**run.properties, **run.tags} if isinstance(run.properties, dict) else dict(run.tags)
    tags.setdefault("mlflow.runName", run.display_name or run.run_id)
    tags.setdefault("mlflow.user", run.created_by.get_username() if run.created_by else "")
    return {
        "info": run_info(run),
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in run_parameters(run).items()],
            "tags": [{"key": k, "value": str(v)} for k, v in tags.items()],
        },
        "inputs": {},
        "outputs": {"model_outputs": [{"model_id": m.model_id, "step": 0} for m in run.mlflow_models.all()]},
    }


def experiment_out(experiment: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": str(experiment.pk),
        "name": experiment.name,
        "artifact_location": "mlflow-artifacts:/",
        "lifecycle_stage": "active",
        "creation_time": _ms(experiment.created_at),
        "last_update_time": _ms(experiment.created_at),
        "tags": [],
    }


def experiments_of(caller: Caller) -> QuerySet[Experiment]:
    found = Experiment.objects.filter(workspace=caller.workspace)
    if caller.run is not None:
        found = found.filter(pk=caller.run.experiment_id)
    return found


def experiment_by_id(caller: Caller, experiment_id: Any) -> Experiment:
    text = str(experiment_id or "")
    found = experiments_of(caller).filter(pk=int(text)).first() if text.isdigit() else None
    if found is None:
        raise not_found(EXPERIMENT_NOT_FOUND.format(what=f"with id {text!r}"))
    return found


def experiment_by_name(caller: Caller, name: Any) -> Experiment:
    found = experiments_of(caller).filter(name=str(name or "")).first()
    if found is None:
        raise not_found(EXPERIMENT_NOT_FOUND.format(what=repr(name)))
    return found


def runs_page(
    caller: Caller,
    experiment_ids: list[Any],
    *,
    offset: int,
    limit: int,
    filter_text: str = "",
    order_by: Any = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the runs of these experiments that match MLflow's `filter_text`, in `order_by`
    (newest first by default), as MLflow's Run objects."""
    experiments = [experiment_by_id(caller, each).pk for each in experiment_ids]
    runs = apply_mlflow_filter(
        caller.workspace, experiments, filter_text, only=caller.run.pk if caller.run is not None else None
    )
    runs = apply_order(runs, order_by)
    page = list(runs.select_related("created_by").prefetch_related("mlflow_models")[offset : offset + limit + 1])
    following = offset + limit if len(page) > limit else None
    page = page[:limit]
    latest = _latest_metrics(page)
    return [run_out(run, latest[run.pk]) for run in page], following


def page_token(offset: int | None) -> str | None:
    return None if offset is None else base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def page_offset(token: Any) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except ValueError:
        pass
    raise invalid(BAD_PAGE_TOKEN)


def metric_history(run: Run, key: str) -> list[dict[str, Any]]:
    """Every point of a metric (of rank 0, or of the lowest rank that logged it), in arrival order."""
    series = MetricSeries.objects.filter(run=run, name=key, kind=SeriesKind.SCALAR).order_by("rank").first()
    if series is None:
        return []
    points = metric_selectors.points_of(series)
    steps = points.steps.tolist() if points.steps is not None else [0] * points.count
    times = points.times.tolist() if points.times is not None else [0.0] * points.count
    return [
        {"key": key, "value": value, "timestamp": int(when * 1000), "step": step, "run_id": run.run_id}
        for value, step, when in zip(json_numbers(points.values), steps, times, strict=True)
    ]


def logged_model(caller: Caller, model_id: str) -> LoggedModel:
    found = LoggedModel.objects.select_related("run").filter(model_id=model_id, run__workspace=caller.workspace)
    if caller.run is not None:
        found = found.filter(run=caller.run)
    model = found.first()
    if model is None:
        raise not_found(MODEL_NOT_FOUND.format(model_id=model_id))
    return model


def logged_model_out(model: LoggedModel) -> dict[str, Any]:
    return {
        "info": {
            "model_id": model.model_id,
            "experiment_id": str(model.run.experiment_id),
            "name": model.name,
            "creation_timestamp_ms": _ms(model.created_at),
            "last_updated_timestamp_ms": _ms(model.updated_at),
            "artifact_uri": artifact_uri(model.run, model.path),
            "status": model.status,
            "model_type": model.model_type,
            "source_run_id": model.run.run_id,
            "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
        },
        "data": {"params": [{"key": k, "value": v} for k, v in model.params.items()], "metrics": []},
    }
