"""Who calls TrainHub's MLflow endpoints, in MLflow's error format.

Two kinds of bearer token reach them (MLflow's client sends `MLFLOW_TRACKING_TOKEN` as
`Authorization: Bearer …`): a run's own token, which the node sets in every run and which reaches
that run only (reads and writes, while the run lasts), and a member's API token of the workspace,
which reads the workspace's runs. Any other run id answers 404, as another workspace does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone

from metrics.limits import RUN_TOKEN_GRACE_SECONDS
from runs import selectors as run_selectors
from runs.models import FINAL_STATUSES, Run
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces import services as workspace_services
from trainhub.workspaces.models import ApiToken, Role, Workspace
from trainhub.workspaces.permissions import Access
from trainhub.workspaces.selectors import RUN_TOKEN_PREFIX, hash_token

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


# How long a web process keeps who a run token is (its run, and its author's role in the workspace):
# `mlflow.log_metric` in a loop is one request per point, and those two reads were a third of its
# time. Whether the run has ended is still read on every request (a cheap one); an author removed
# from the workspace is refused at most this much later.
RUN_CALLER_SECONDS = 5.0
_RUN_CALLERS_MAX = 1000


@dataclass(frozen=True)
class Caller:
    access: Access
    run: Run | None  # a run's token: the one run it reaches (its fields as read when checked)

    @property
    def workspace(self):  # noqa: ANN201
        return self.access.workspace


_RUN_CALLERS: dict[str, tuple[float, Caller]] = {}


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
    return Caller(access=_access(api_token.workspace, api_token.user, workspace_name, _role(api_token)), run=None)


def _run_caller(token: str, workspace_name: str) -> Caller:
    key, now = hash_token(token), time.monotonic()
    cached = _RUN_CALLERS.get(key)
    if cached is not None and cached[0] > now:
        caller = cached[1]
        assert caller.run is not None
        state = Run.objects.filter(pk=caller.run.pk).values_list("status", "ended_at").first()
        if state is None:
            raise MlflowError("UNAUTHENTICATED", INVALID_TOKEN, 401)
        _refuse_ended(caller.run.run_id, *state)
        if caller.workspace.name != workspace_name:
            raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name))
        return caller
    caller = _checked_run_caller(token, workspace_name)
    if len(_RUN_CALLERS) >= _RUN_CALLERS_MAX:
        for stale in [k for k, (until, _) in _RUN_CALLERS.items() if until <= now] or list(_RUN_CALLERS):
            _RUN_CALLERS.pop(stale, None)
    _RUN_CALLERS[key] = (now + RUN_CALLER_SECONDS, caller)
    return caller


def _checked_run_caller(token: str, workspace_name: str) -> Caller:
    run = run_selectors.run_for_token(token)
    if run is None or run.created_by is None:
        raise MlflowError("UNAUTHENTICATED", INVALID_TOKEN, 401)
    _refuse_ended(run.run_id, run.status, run.ended_at)
    if run.workspace.name != workspace_name:
        raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    member = _access(run.workspace, run.created_by, workspace_name, _role(run))
    # A run's token acts for the run, never as an owner of the workspace.
    return Caller(
        access=Access(workspace=member.workspace, role=Role.CONTRIBUTOR if member.can_write else member.role), run=run
    )


def _role(credential: ApiToken | Run) -> object:
    """The role of the credential's user, read with it (active_token, run_for_token)."""
    return getattr(credential, "member_role", workspace_selectors.NOT_READ)


def _access(workspace: Workspace, user: User, workspace_name: str, role: object) -> Access:
    """A credential's access, with the role its user had as it was read (None: no longer a member)."""
    try:
        return workspace_selectors.credential_access(workspace, user, workspace_name, role)
    except Http404:
        raise not_found(WORKSPACE_NOT_FOUND.format(name=workspace_name)) from None


def _refuse_ended(run_id: str, status: str, ended_at: datetime | None) -> None:
    # The last flush of a script stopped by its run's end arrives when the run is final.
    if status not in FINAL_STATUSES:
        return
    if ended_at is None or ended_at < timezone.now() - timedelta(seconds=RUN_TOKEN_GRACE_SECONDS):
        raise MlflowError("UNAUTHENTICATED", RUN_ENDED.format(run_id=run_id, status=status), 401)


def run_for(caller: Caller, run_id: object) -> Run:
    """The run `run_id` names, as far as this caller may see it."""
    if not isinstance(run_id, str) or not run_id:
        raise invalid("Give run_id: the id of a TrainHub run.")
    if caller.run is not None:
        if run_id != caller.run.run_id:
            raise not_found(OTHER_RUN.format(run_id=run_id, own=caller.run.run_id))
        # The run as it is now: the caller's copy may be a few seconds old (RUN_CALLER_SECONDS).
        return run_selectors.run_get(caller.workspace, run_id)
    try:
        return run_selectors.run_get(caller.workspace, run_id)
    except Http404:
        raise not_found(RUN_NOT_FOUND.format(run_id=run_id)) from None


def writable_run(caller: Caller, run_id: object) -> Run:
    """The run `run_id` names, when this caller may write to it: a run's token, to its own run.

    The caller's copy of the run, as read when its token was checked: writes lock and read again
    what they change, and need only its identity from it (no query per `log_metric`)."""
    if caller.run is None:
        raise MlflowError("PERMISSION_DENIED", READ_ONLY, 403)
    if not isinstance(run_id, str) or not run_id:
        raise invalid("Give run_id: the id of a TrainHub run.")
    if run_id != caller.run.run_id:
        raise not_found(OTHER_RUN.format(run_id=run_id, own=caller.run.run_id))
    return caller.run
