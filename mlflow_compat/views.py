"""MLflow's tracking REST API over TrainHub's runs: `/mlflow/<workspace>/api/2.0/mlflow/…` and
`/mlflow/<workspace>/api/2.0/mlflow-artifacts/artifacts/…`, the calls the stock `mlflow` client
makes to log into a run and to read runs back. Everything else answers in MLflow's error format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from metrics import limits
from mlflow_compat import selectors, services
from mlflow_compat.access import Caller, MlflowError, caller_for, invalid, not_found, run_for, writable_run
from registry.paths import clean_relative_path
from runs import selectors as run_selectors
from runs.models import Run
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page

UNKNOWN_ENDPOINT = (
    "TrainHub does not serve {method} {endpoint} of MLflow's API: it serves what MLflow's client "
    "uses to log into a run (runs/get, log-metric, log-batch, log-parameter, set-tag, update, "
    "logged models, artifacts) and to read runs back (runs/search, metrics/get-history, experiments)."
)
NO_NEW_RUNS = (
    "Runs are made by submitting them to TrainHub; inside a run, mlflow.start_run() resumes it "
    "(MLFLOW_RUN_ID is set). A second mlflow run in the same script is not supported."
)
NO_NEW_EXPERIMENTS = (
    "Experiments are made when a run is submitted to them; this run belongs to {name!r} "
    "(MLFLOW_EXPERIMENT_NAME is set)."
)
NOT_DELETABLE = "TrainHub keeps a run's history: runs, tags and outputs are not deleted through MLflow."
MAX_SEARCH_RESULTS = 1000

Handler = Callable[[HttpRequest, Caller, dict[str, Any]], Any]


def _body(request: HttpRequest) -> dict[str, Any]:
    if request.method == "GET":
        found: dict[str, Any] = {}
        for key in request.GET:
            values = request.GET.getlist(key)
            found[key] = values if len(values) > 1 else values[0]
        return found
    declared = request.headers.get("Content-Length") or "0"
    if declared.isdigit() and int(declared) > limits.MAX_BODY_BYTES:
        raise invalid(f"The body is larger than {limits.MAX_BODY_BYTES} bytes.")
    raw = request.read(limits.MAX_BODY_BYTES + 1)
    if len(raw) > limits.MAX_BODY_BYTES:
        raise invalid(f"The body is larger than {limits.MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise MlflowError("MALFORMED_REQUEST", f"The body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise MlflowError("MALFORMED_REQUEST", "The body must be a JSON object.")
    return body


def _answer(call: Callable[[], Any]) -> HttpResponseBase:
    try:
        found = call()
    except MlflowError as error:
        return error.response()
    except Http404 as error:
        return not_found(str(error) or "Not found.").response()
    except PermissionDenied as error:
        return MlflowError("PERMISSION_DENIED", str(error) or "You may not do that.", 403).response()
    except ValidationError as error:
        return invalid(" ".join(error.messages)).response()
    if isinstance(found, HttpResponseBase):
        return found
    return JsonResponse(found if found is not None else {})


# ---------------------------------------------------------------- runs


def get_run(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = run_for(caller, body.get("run_id") or body.get("run_uuid"))
    return {"run": selectors.run_out(run)}


def update_run(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """start_run's RUNNING is answered with the run as it is; end_run's (and set_terminated's)
    FINISHED, FAILED or KILLED is recorded and shown on the run page, while the run's own status
    stays TrainHub's to keep: its processes' exit decides, and the run goes on until they end."""
    run_id = body.get("run_id") or body.get("run_uuid")
    run = writable_run(caller, run_id)
    services.end_status_record(run=run, status=body.get("status"))
    return {"run_info": selectors.run_info(run_for(caller, run_id))}


def log_metric(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = writable_run(caller, body.get("run_id") or body.get("run_uuid"))
    metric = {k: body.get(k) for k in ("key", "value", "timestamp", "step", "model_id")}
    services.log_batch(caller=caller, run=run, metrics=[metric])
    return {}


def log_param(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = writable_run(caller, body.get("run_id") or body.get("run_uuid"))
    services.log_batch(caller=caller, run=run, params=[{"key": body.get("key"), "value": body.get("value")}])
    return {}


def set_tag(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = writable_run(caller, body.get("run_id") or body.get("run_uuid"))
    services.log_batch(caller=caller, run=run, tags=[{"key": body.get("key"), "value": body.get("value")}])
    return {}


def log_batch(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = writable_run(caller, body.get("run_id"))
    services.log_batch(
        caller=caller, run=run, metrics=body.get("metrics"), params=body.get("params"), tags=body.get("tags")
    )
    return {}


def accepted_for_run(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """log-model (MLflow 2's record of a logged model), log-inputs and outputs: the files and the
    logged model already tell TrainHub what it keeps, so these only check whose run it is."""
    writable_run(caller, body.get("run_id"))
    return {}


def create_run(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    raise MlflowError("INVALID_STATE", NO_NEW_RUNS)


def refuse_delete(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    raise MlflowError("PERMISSION_DENIED", NOT_DELETABLE, 403)


def search_runs(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("experiment_ids") or []
    if not isinstance(ids, list):
        raise invalid("experiment_ids must be a list.")
    limit = _integer(body.get("max_results"), 1000)
    if not 1 <= limit <= 50_000:
        raise invalid("max_results is a number from 1 to 50000.")
    if body.get("run_view_type") not in (None, "", "ACTIVE_ONLY", "ALL", 1, 3):
        # TrainHub deletes no runs: every run is active, and none is in DELETED_ONLY.
        return {"runs": []}
    filter_text = body.get("filter") or ""
    if not isinstance(filter_text, str):
        raise invalid("filter is a string in MLflow's search syntax.")
    runs, following = selectors.runs_page(
        caller,
        ids,
        offset=selectors.page_offset(body.get("page_token")),
        limit=min(limit, MAX_SEARCH_RESULTS),
        filter_text=filter_text,
        order_by=body.get("order_by"),
    )
    answer: dict[str, Any] = {"runs": runs}
    if following is not None:
        answer["next_page_token"] = selectors.page_token(following)
    return answer


def _integer(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"{value!r} is not a number.") from None


def get_metric_history(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    run = run_for(caller, body.get("run_id") or body.get("run_uuid"))
    key = body.get("metric_key")
    if not isinstance(key, str) or not key:
        raise invalid("Give metric_key: the name of a metric of the run.")
    return {"metrics": selectors.metric_history(run, key)}


# ---------------------------------------------------------------- experiments


def get_experiment(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": selectors.experiment_out(selectors.experiment_by_id(caller, body.get("experiment_id")))}


def get_experiment_by_name(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": selectors.experiment_out(selectors.experiment_by_name(caller, body.get("experiment_name")))}


def search_experiments(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    return {"experiments": [selectors.experiment_out(e) for e in selectors.experiments_of(caller)]}


def create_experiment(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    name = caller.run.experiment.name if caller.run is not None else "the one you submit a run to"
    raise MlflowError("INVALID_STATE", NO_NEW_EXPERIMENTS.format(name=name))


# ---------------------------------------------------------------- logged models (MLflow 3)


def create_logged_model(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    # MLflow 3's log_model outside `with mlflow.start_run()` names no run (MLflow 1 and 2 started
    # MLFLOW_RUN_ID's): from inside a run, its token says whose model it is.
    source_run_id = body.get("source_run_id") or (caller.run.run_id if caller.run is not None else None)
    if not source_run_id:
        raise invalid(services.MODEL_NEEDS_RUN)
    run = writable_run(caller, source_run_id)
    return {"model": selectors.logged_model_out(services.logged_model_create(caller=caller, run=run, body=body))}


def logged_model(request: HttpRequest, caller: Caller, body: dict[str, Any], model_id: str, tail: str) -> Any:
    model = selectors.logged_model(caller, model_id)
    method = request.method
    if method == "GET" and not tail:
        return {"model": selectors.logged_model_out(model)}
    writable_run(caller, model.run.run_id)
    if method == "PATCH" and not tail:
        model = services.logged_model_update(model=model, status=body.get("status"))
    elif method == "PATCH" and tail == "tags":
        model = services.logged_model_update(model=model, tags=body.get("tags") or [])
    elif method == "POST" and tail == "params":
        model = services.logged_model_update(model=model, params=body.get("params") or [])
    elif method == "DELETE" and tail.startswith("tags/"):
        model = services.logged_model_update(model=model, removed_tag=tail.removeprefix("tags/"))
    else:
        raise _unknown(request, f"logged-models/{model_id}/{tail}")
    return {"model": selectors.logged_model_out(model)}


def search_logged_models(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """None found, on purpose: a logged model's files are its run's artifacts (`outputs/<name>/`), and
    MLflow's client lists and downloads a run's artifacts plus those of the models this finds, which
    would show every model file twice. `logged-models/<id>` still answers for a model by its id."""
    for each in body.get("experiment_ids") or []:
        selectors.experiment_by_id(caller, each)
    return {"models": []}


ENDPOINTS: dict[tuple[str, str], Handler] = {
    ("GET", "runs/get"): get_run,
    ("POST", "runs/update"): update_run,
    ("POST", "runs/log-metric"): log_metric,
    ("POST", "runs/log-parameter"): log_param,
    ("POST", "runs/set-tag"): set_tag,
    ("POST", "runs/log-batch"): log_batch,
    ("POST", "runs/log-model"): accepted_for_run,
    ("POST", "runs/log-inputs"): accepted_for_run,
    ("POST", "runs/outputs"): accepted_for_run,
    ("POST", "runs/create"): create_run,
    ("POST", "runs/delete"): refuse_delete,
    ("POST", "runs/delete-tag"): refuse_delete,
    ("POST", "runs/search"): search_runs,
    ("GET", "metrics/get-history"): get_metric_history,
    ("GET", "experiments/get"): get_experiment,
    ("GET", "experiments/get-by-name"): get_experiment_by_name,
    ("POST", "experiments/search"): search_experiments,
    ("POST", "experiments/create"): create_experiment,
    ("POST", "logged-models"): create_logged_model,
    ("POST", "logged-models/search"): search_logged_models,
}


def _unknown(request: HttpRequest, endpoint: str) -> MlflowError:
    return MlflowError("ENDPOINT_NOT_FOUND", UNKNOWN_ENDPOINT.format(method=request.method, endpoint=endpoint), 404)


@csrf_exempt
def tracking(request: HttpRequest, workspace_name: str, endpoint: str) -> HttpResponseBase:
    def call() -> Any:
        caller = caller_for(request, workspace_name)
        key = endpoint.strip("/")
        handler = ENDPOINTS.get((request.method or "", key))
        if handler is not None:
            return handler(request, caller, _body(request))
        if key.startswith("logged-models/") and key.count("/") >= 1:
            _, model_id, *rest = key.split("/", 2)
            return logged_model(request, caller, _body(request), model_id, rest[0] if rest else "")
        raise _unknown(request, key)

    return _answer(call)


@login_required
def links(request: HttpRequest, workspace_name: str) -> HttpResponse:
    """Where the links MLflow's client prints (`…/mlflow/<workspace>/#/experiments/…/runs/<id>`) lead:
    a page whose script opens TrainHub's page of that run."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    return workspace_page(request, access, "mlflow_compat/links.html", "experiments")


@csrf_exempt
def not_served(request: HttpRequest, workspace_name: str, endpoint: str) -> HttpResponse:
    """MLflow 3's other APIs (server-info, traces, …): the client reads 404 as 'not available'."""
    return _unknown(request, endpoint).response()


# ---------------------------------------------------------------- artifacts


def _run_and_rest(caller: Caller, artifact_path: str) -> tuple[Run, str]:
    run_id, _, rest = artifact_path.strip("/").partition("/")
    return run_for(caller, run_id), rest


@csrf_exempt
def artifacts_list(request: HttpRequest, workspace_name: str) -> HttpResponseBase:
    def call() -> Any:
        caller = caller_for(request, workspace_name)
        if request.method != "GET":
            raise _unknown(request, "mlflow-artifacts/artifacts")
        run, rest = _run_and_rest(caller, request.GET.get("path", ""))
        folder = clean_relative_path(rest, what="artifact path") if rest.strip("/") else ""
        prefix = folder + "/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, size in run_selectors.run_files(run).filter(path__startswith=prefix).values_list("path", "size"):
            name, _, deeper = path[len(prefix) :].partition("/")
            entries[name] = (
                {"path": name, "is_dir": True} if deeper else {"path": name, "is_dir": False, "file_size": size}
            )
        return {"files": [entries[name] for name in sorted(entries)]}

    return _answer(call)


@csrf_exempt
def artifact(request: HttpRequest, workspace_name: str, artifact_path: str) -> HttpResponseBase:
    def call() -> Any:
        caller = caller_for(request, workspace_name)
        run, rest = _run_and_rest(caller, artifact_path)
        if request.method == "PUT":
            writable = writable_run(caller, run.run_id)
            path = services.output_path(writable, rest)
            declared = request.headers.get("Content-Length")
            services.artifact_store(
                caller=caller,
                run=writable,
                path=path,
                stream=request,
                declared=int(declared) if declared and declared.isdigit() else None,
            )
            return {}
        if request.method == "GET":
            stored = run_selectors.run_file_get(run, clean_relative_path(rest, what="artifact path"))
            return FileResponse(
                default_storage.open(stored.storage_name, "rb"),
                as_attachment=True,
                filename=stored.path.rsplit("/", 1)[-1],
                content_type="application/octet-stream",
            )
        raise _unknown(request, f"mlflow-artifacts/artifacts/{artifact_path}")

    return _answer(call)
