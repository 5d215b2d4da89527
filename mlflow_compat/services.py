"""Writes: what MLflow's client sends from inside a run, stored as that run's metrics, parameters,
tags, properties and outputs.

- Metrics (key, value, step, timestamp in ms) go through the same ingest as `run.log`, at rank 0;
  NaN and ±inf are kept, as MLflow's server keeps them (charts leave them out and say so).
- Params are the run's parameters (beside those read from its arguments, which they replace).
- Tags go to the run's tags; MLflow's own (`mlflow.*`) to its properties, out of the way.
- Artifacts are the run's outputs: `log_artifact("x.png", "plots")` is `outputs/plots/x.png`.
  Outputs are history: a path is written once.
"""

from __future__ import annotations

import secrets
import tempfile
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from metrics import limits
from metrics.models import MetricSeries, SeriesKind
from metrics.selectors import points_of
from metrics.services import MetricsBatch, SeriesBatch, metrics_ingest
from mlflow_compat.access import Caller, MlflowError, invalid
from mlflow_compat.models import LoggedModel
from mlflow_compat.selectors import SYSTEM_TAG_PREFIX, run_parameters
from registry.paths import clean_relative_path
from runs.models import Run, RunFile
from runs.run_values import run_values_sync
from runs.services import run_file_store
from trainhub import uploads
from trainhub.workspaces.permissions import Action

# MLflow's own limits on one log_batch (its server refuses more the same way).
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_PARAM_LENGTH = 6000
MAX_PARAMS_PER_RUN = 1000

BATCH_TOO_LARGE = (
    "A log_batch carries at most {metrics} metrics, {params} params and {tags} tags "
    "({total} items in all); this one has {got_metrics}, {got_params} and {got_tags}."
)
BAD_METRIC = "Metric {index}: {problem}."
BAD_ENTRY = "{what} {index} is not an object with a string 'key' and 'value'."
PARAM_TOO_LONG = "Param {key!r} is {length} characters long; the limit is " + str(MAX_PARAM_LENGTH) + "."
TOO_MANY_PARAMS = "Run {run_id} would have {total} params; the limit is {limit} per run."
TAG_TOO_LONG = "Tag {key!r} is {length} characters long; the limit is {limit}."
BAD_KEY = "A {what} name is a string of 1 to " + str(limits.MAX_NAME_LENGTH) + " characters; got {got!r}."
NOT_IN_OUTPUTS = (
    "Artifact path {path!r} is outside the run's outputs: a run's artifacts are stored under '<run id>/outputs/…'."
)
ARTIFACT_EXISTS = (
    "Run {run_id} already holds {path!r}: a run's outputs are history and are written once. "
    "Log the new file under another name."
)
ARTIFACT_TOO_LARGE = "The artifact is larger than {limit} bytes, the limit for one file."
TOO_MANY_FILES = "Run {run_id} already holds {limit} files, the limit per run."
RUN_TOO_LARGE = (
    "Run {run_id} holds {held} bytes of files; this artifact ({size} bytes so far) would take it past "
    "{limit} bytes, the limit per run (TRAINHUB_MLFLOW_MAX_RUN_BYTES). Nothing of it was kept."
)
MODEL_NEEDS_RUN = (
    "TrainHub keeps a logged model in the run that made it (its outputs): log it from inside a run, "
    "where mlflow.start_run() resumes the TrainHub run."
)
MODEL_EXPERIMENT = "Experiment {experiment_id!r} is not the experiment of run {run_id}."
BAD_MODEL_STATUS = "status is LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED; got {got!r}."


def _entries(given: Any, what: str) -> list[tuple[str, str]]:
    if given is None:
        return []
    if not isinstance(given, list):
        raise invalid(f"{what}s must be a list.")
    found = []
    for index, entry in enumerate(given):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise invalid(BAD_ENTRY.format(what=what, index=index))
        key, value = entry["key"], entry.get("value", "")
        if not 1 <= len(key) <= limits.MAX_NAME_LENGTH:
            raise invalid(BAD_KEY.format(what=what.lower(), got=key))
        found.append((key, "" if value is None else str(value)))
    return found


def _number(value: Any) -> float | None:
    # MLflow's JSON carries doubles as numbers, and NaN/Infinity as strings.
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _integer(value: Any) -> int | None:
    # int64 fields arrive as numbers or as strings of digits.
    if type(value) is int:
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def _series(metrics: Any) -> list[SeriesBatch]:
    if metrics is None:
        return []
    if not isinstance(metrics, list):
        raise invalid("metrics must be a list.")
    grouped: dict[str, tuple[list[float], list[int], list[float]]] = {}
    for index, entry in enumerate(metrics):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise invalid(BAD_METRIC.format(index=index, problem="it has no string 'key'"))
        key = entry["key"]
        if not 1 <= len(key) <= limits.MAX_NAME_LENGTH:
            raise invalid(BAD_KEY.format(what="metric", got=key))
        value = _number(entry.get("value"))
        if value is None:
            raise invalid(BAD_METRIC.format(index=index, problem=f"value {entry.get('value')!r} is not a number"))
        step = _integer(entry.get("step", 0))
        if step is None or not 0 <= step < 2**63:
            raise invalid(
                BAD_METRIC.format(index=index, problem=f"step {entry.get('step')!r} is not an integer from 0")
            )
        stamp = _integer(entry.get("timestamp", 0))
        if stamp is None or not 0 <= stamp < 2**53:
            raise invalid(
                BAD_METRIC.format(index=index, problem=f"timestamp {entry.get('timestamp')!r} is not milliseconds")
            )
        values, steps, times = grouped.setdefault(key, ([], [], []))
        values.append(value)
        steps.append(step)
        times.append(stamp / 1000.0)
    return [
        SeriesBatch(
            name=key,
            description="",
            values=np.array(values, dtype="<f8"),
            steps=np.array(steps, dtype="<i8"),
            times=np.array(times, dtype="<f8"),
        )
        for key, (values, steps, times) in grouped.items()
    ]


def _point_key(key: str, step: Any, timestamp: Any, value: Any) -> tuple[str, int | None, int | None, str]:
    number = _number(value)
    return key, _integer(step), _integer(timestamp), repr(number)


def _without_model_copies(run: Run, metrics: Any) -> Any:
    """`metrics` less the copies `log_model` sends of points the run holds already (the same key,
    step, timestamp and value, linked to the new model). Autolog's own points carry a model_id too,
    and are new: they are kept."""
    if not isinstance(metrics, list):
        return metrics
    linked = [e for e in metrics if isinstance(e, dict) and e.get("model_id") and isinstance(e.get("key"), str)]
    if not linked:
        return metrics
    steps = {_integer(e.get("step", 0)) for e in linked}
    held = set()
    for series in MetricSeries.objects.filter(
        run=run, rank=0, kind=SeriesKind.SCALAR, name__in={e["key"] for e in linked}
    ):
        points = points_of(series)
        assert points.steps is not None and points.times is not None
        near = np.isin(points.steps, [s for s in steps if s is not None])
        for step, when, value in zip(
            points.steps[near].tolist(), points.times[near].tolist(), points.values[near].tolist(), strict=True
        ):
            held.add((series.name, step, round(when * 1000), repr(value)))
    return [
        e
        for e in metrics
        if not (
            isinstance(e, dict)
            and e.get("model_id")
            and isinstance(e.get("key"), str)
            and _point_key(e["key"], e.get("step", 0), e.get("timestamp", 0), e.get("value")) in held
        )
    ]


def log_batch(*, caller: Caller, run: Run, metrics: Any = None, params: Any = None, tags: Any = None) -> None:
    """Store one MLflow log_batch (or log_metric, log_param, set_tag) in the run, all or nothing."""
    param_items, tag_items = _entries(params, "Param"), _entries(tags, "Tag")
    count = len(metrics) if isinstance(metrics, list) else 0
    if (
        count > MAX_BATCH_METRICS
        or len(param_items) > MAX_BATCH_PARAMS
        or len(tag_items) > MAX_BATCH_TAGS
        or count + len(param_items) + len(tag_items) > MAX_BATCH_METRICS
    ):
        raise invalid(
            BATCH_TOO_LARGE.format(
                metrics=MAX_BATCH_METRICS,
                params=MAX_BATCH_PARAMS,
                tags=MAX_BATCH_TAGS,
                total=MAX_BATCH_METRICS,
                got_metrics=count,
                got_params=len(param_items),
                got_tags=len(tag_items),
            )
        )
    series = _series(_without_model_copies(run, metrics))
    user_tags: dict[str, str] = {}
    system_tags: dict[str, str] = {}
    for key, value in tag_items:
        limit = limits.MAX_TAG_VALUE_LENGTH
        if len(value) > limit:
            raise invalid(TAG_TOO_LONG.format(key=key, length=len(value), limit=limit))
        (system_tags if key.startswith(SYSTEM_TAG_PREFIX) else user_tags)[key] = value
    for key, value in param_items:
        if len(value) > MAX_PARAM_LENGTH:
            raise invalid(PARAM_TOO_LONG.format(key=key, length=len(value)))
    batch = MetricsBatch(rank=0, series=series, tables=[], tags=user_tags) if series or user_tags else None
    if not (param_items or system_tags):
        if batch is not None:  # a log_metric: one transaction, no savepoint inside another
            metrics_ingest(access=caller.access, run=run, batch=batch)
        return
    with transaction.atomic():
        if batch is not None:
            metrics_ingest(access=caller.access, run=run, batch=batch)
        _store_params_and_properties(run, dict(param_items), system_tags)


def _store_params_and_properties(run: Run, params: dict[str, str], properties: dict[str, str]) -> None:
    locked = (
        Run.objects.select_for_update()
        .only("id", "run_id", "workspace_id", "experiment_id", "parameters", "arguments", "tags", "properties")
        .get(pk=run.pk)
    )
    if params:
        # A param logged again replaces the value (MLflow's server refuses a change): the run's
        # parameters also hold its arguments as typed (`--lr 1e-3`), which a script logs as 0.001.
        merged = {**run_parameters(locked), **params}
        if len(merged) > MAX_PARAMS_PER_RUN:
            raise invalid(TOO_MANY_PARAMS.format(run_id=locked.run_id, total=len(merged), limit=MAX_PARAMS_PER_RUN))
        locked.parameters = merged
    if properties:
        merged = {**(locked.properties or {}), **properties}
        if len(merged) > limits.MAX_TAGS_PER_RUN:
            raise MlflowError(
                "RESOURCE_LIMIT_EXCEEDED",
                f"Run {locked.run_id} would have {len(merged)} MLflow tags; the limit is {limits.MAX_TAGS_PER_RUN}.",
            )
        locked.properties = merged
    locked.save(update_fields=["parameters", "properties"])
    if params:
        run_values_sync(locked)


# ---------------------------------------------------------------- end_run

# What `mlflow.end_run(status=...)` or `set_terminated` asked for, kept in the run's properties.
END_STATUS_PROPERTY = "mlflow.endRunStatus"
END_STATUSES = {"FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
RUNNING_STATUSES = {None, "", "RUNNING", "SCHEDULED", 1, 2}
BAD_STATUS = "status is one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED; got {got!r}."


def end_status_record(*, run: Run, status: Any) -> None:
    """Keep the end status MLflow's client sent; the run's own status is left to its processes."""
    if not isinstance(status, str | int | None):
        raise invalid(BAD_STATUS.format(got=status))
    if status in RUNNING_STATUSES:
        return
    if status not in END_STATUSES:
        raise invalid(BAD_STATUS.format(got=status))
    with transaction.atomic():
        _store_params_and_properties(run, {}, {END_STATUS_PROPERTY: END_STATUSES[status]})


# ---------------------------------------------------------------- artifacts


def max_artifact_bytes() -> int:
    return settings.TRAINHUB_MLFLOW_MAX_ARTIFACT_BYTES


def output_path(run: Run, artifact_path: str) -> str:
    """`outputs/…` of the run from the path after `<run id>/`, or refused when it leaves them."""
    path = clean_relative_path(artifact_path, what="artifact path")
    if not path.startswith("outputs/"):
        raise invalid(NOT_IN_OUTPUTS.format(path=artifact_path))
    return path


def artifact_store(*, caller: Caller, run: Run, path: str, stream: uploads.Readable, declared: int | None) -> RunFile:
    """Store one uploaded file as `path` of the run's outputs (streamed to disk, bounded)."""
    caller.access.require(Action.WRITE)
    limit = max_artifact_bytes()
    if declared is not None and declared > limit:
        raise invalid(ARTIFACT_TOO_LARGE.format(limit=limit))
    if RunFile.objects.filter(run=run, path=path).exists():
        raise MlflowError("RESOURCE_ALREADY_EXISTS", ARTIFACT_EXISTS.format(run_id=run.run_id, path=path))
    if RunFile.objects.filter(run=run).count() >= settings.TRAINHUB_MLFLOW_MAX_FILES_PER_RUN:
        raise MlflowError(
            "RESOURCE_LIMIT_EXCEEDED",
            TOO_MANY_FILES.format(run_id=run.run_id, limit=settings.TRAINHUB_MLFLOW_MAX_FILES_PER_RUN),
        )
    run_limit = settings.TRAINHUB_MLFLOW_MAX_RUN_BYTES
    held = RunFile.objects.filter(run=run).aggregate(total=Sum("size"))["total"] or 0

    def too_large(size: int) -> MlflowError:
        return MlflowError(
            "RESOURCE_LIMIT_EXCEEDED", RUN_TOO_LARGE.format(run_id=run.run_id, held=held, size=size, limit=run_limit)
        )

    if held + (declared or 0) > run_limit:
        raise too_large(declared or 0)
    root = uploads.upload_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix="mlflow-") as staged:
        size = 0
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise invalid(ARTIFACT_TOO_LARGE.format(limit=limit))
            if held + size > run_limit:
                raise too_large(size)
            staged.write(chunk)
        staged.flush()
        stored = run_file_store(run=run, path=path, local_path=staged.name)
    if stored is None:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", ARTIFACT_EXISTS.format(run_id=run.run_id, path=path))
    return stored


# ---------------------------------------------------------------- logged models


def _free_path(run: Run, name: str) -> str:
    base = output_path(run, f"outputs/{name}")
    taken = set(LoggedModel.objects.filter(run=run).values_list("path", flat=True))
    candidate, number = base, 1
    while candidate in taken or RunFile.objects.filter(run=run, path__startswith=candidate + "/").exists():
        number += 1
        candidate = f"{base}-{number}"
    return candidate


def logged_model_create(*, caller: Caller, run: Run, body: dict[str, Any]) -> LoggedModel:
    """What `log_model` announces before uploading: its files go to `outputs/<name>` of the run."""
    experiment_id = str(body.get("experiment_id") or run.experiment_id)
    if experiment_id != str(run.experiment_id):
        raise invalid(MODEL_EXPERIMENT.format(experiment_id=experiment_id, run_id=run.run_id))
    name = str(body.get("name") or "model")
    if "/" in name or len(name) > 200:
        raise invalid(f"A model's name is one path component of at most 200 characters; got {name!r}.")
    tags = dict(_entries(body.get("tags"), "Tag"))
    params = dict(_entries(body.get("params"), "Param"))
    with transaction.atomic():
        Run.objects.select_for_update().only("id").get(pk=run.pk)
        return LoggedModel.objects.create(
            model_id="m-" + secrets.token_hex(16),
            run=run,
            name=name,
            path=_free_path(run, name),
            model_type=str(body.get("model_type") or "")[:255],
            tags=tags,
            params=params,
        )


def logged_model_update(
    *, model: LoggedModel, status: Any = None, tags: Any = None, params: Any = None, removed_tag: str | None = None
) -> LoggedModel:
    if status is not None:
        if status not in ("LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED", 2, 3):
            raise invalid(BAD_MODEL_STATUS.format(got=status))
        model.status = {2: "LOGGED_MODEL_READY", 3: "LOGGED_MODEL_UPLOAD_FAILED"}.get(status, status)
    if tags is not None:
        model.tags = {**model.tags, **dict(_entries(tags, "Tag"))}
    if params is not None:
        model.params = {**model.params, **dict(_entries(params, "Param"))}
    if removed_tag is not None:
        model.tags.pop(removed_tag, None)
    if len(model.tags) > limits.MAX_TAGS_PER_RUN or len(model.params) > MAX_PARAMS_PER_RUN:
        raise MlflowError("RESOURCE_LIMIT_EXCEEDED", "This logged model has too many tags or params.")
    model.save()
    return model
