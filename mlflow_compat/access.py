"""Who calls TrainHub's MLflow endpoints, in MLflow's error format.

Two kinds of bearer token reach them (MLflow's client sends `MLFLOW_TRACKING_TOKEN` as
`Authorization: Bearer …`): a run's own token, which the node sets in every run and which reaches
that run only (reads and writes, while the run lasts), and a member's API token of the workspace,
which reads the workspace's runs. Any other run id answers 404, as another workspace does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone

from metrics.limits import RUN_TOKEN_GRACE_SECONDS
from runs import selectors as run_selectors
from runs.models import Run
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces import services as workspace_services
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access
from trainhub.workspaces.selectors import RUN_TOKEN_PREFIX

NO_TOKEN = (
    "Send a token as 'Authorization: Bearer <token>' (MLflow sends MLFLOW_TRACKING_TOKEN): inside "
    "a run it is set for you; outside, use an API token from the workspace's Tokens page."
)
INVALID_TOKEN = "The token is not valid: it is unknown, revoked, or its user was removed."
RUN_ENDED = "Run {run_id} has ended ({status}): its token stopped working with it."
WORKSPACE_NOT_FOUND = "No workspace {name!r}, or you are not a member of it."
RUN_NOT_FOUND = "No run {run_id!r} in this workspace."
OTHER_RUN = "No run {run_id!r} for this token: a run's token reaches its own run only ({own})."
READ_ONLY = (
    "Outside a run, TrainHub's MLflow endpoints only read. Runs are written by their own scripts: "
    "inside a TrainHub run, MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and MLFLOW_TRACKING_TOKEN are set."
)


class MlflowError(Exception):
    """An answer in MLflow's error format: `{"error_code": ..., "message": ...}`."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def response(self) -> JsonResponse:
        return JsonResponse({"error_code": self.code, "message": self.message}, status=self.status)


def invalid(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message, 400)


def not_found(message: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message, 404)


@dataclass(frozen=True)
class Caller:
    access: Access
    run: Run | None  # a run's token: the one run it reaches

    @property
    def workspace(self):  # noqa: ANN201
        return self.access.workspace


def caller_for(request: HttpRequest, workspace_name: str) -> Caller:
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token:
        raise MlflowError("UNAUTHENTICATED", NO_TOKEN, 401)
    if token.startswith(RUN_TOKEN_PREFIX):
        return _run_caller(token, workspace_name)
    api_token = workspace_selectors.active_token(token)
    if api_token is None:
        raise MlflowError("UNAUTHENTICATED", INVALID_TOKEN, 401)
    if api_token.workspace.name != workspace_name:
        raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    workspace_services.token_touch(api_token)
    return Caller(access=_access(api_token.user, workspace_name), run=None)


def _run_caller(token: str, workspace_name: str) -> Caller:
    run = run_selectors.run_for_token(token)
    if run is None or run.created_by is None:
        raise MlflowError("UNAUTHENTICATED", INVALID_TOKEN, 401)
    if run.is_final and not _in_grace(run):
        raise MlflowError("UNAUTHENTICATED", RUN_ENDED.format(run_id=run.run_id, status=run.status), 401)
    if run.workspace.name != workspace_name:
        raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    member = _access(run.created_by, workspace_name)
    # A run's token acts for the run, never as an owner of the workspace.
    return Caller(
        access=Access(workspace=member.workspace, role=Role.CONTRIBUTOR if member.can_write else member.role), run=run
    )


def _access(user, workspace_name: str) -> Access:  # noqa: ANN001
    try:
        return workspace_selectors.access_for(user, workspace_name)
    except Http404:
        raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name)) from None


def _in_grace(run: Run) -> bool:
    # The last flush of a script stopped by its run's end arrives when the run is final.
    if run.ended_at is None:
        return False
    return run.ended_at >= timezone.now() - timedelta(seconds=RUN_TOKEN_GRACE_SECONDS)


def run_for(caller: Caller, run_id: object) -> Run:
    """The run `run_id` names, as far as this caller may see it."""
    if not isinstance(run_id, str) or not run_id:
        raise invalid("Give run_id: the id of a TrainHub run.")
    if caller.run is not None:
        if run_id != caller.run.run_id:
            raise not_found(OTHER_RUN.format(run_id=run_id, own=caller.run.run_id))
        # Read with its token in this request: a second read was a quarter of a log_metric's time.
        return caller.run
    try:
        return run_selectors.run_get(caller.workspace, run_id)
    except Http404:
        raise not_found(RUN_NOT_FOUND.format(run_id=run_id)) from None


def writable_run(caller: Caller, run_id: object) -> Run:
    """The run `run_id` names, when this caller may write to it: a run's token, to its own run."""
    if caller.run is None:
        raise MlflowError("PERMISSION_DENIED", READ_ONLY, 403)
    return run_for(caller, run_id)
