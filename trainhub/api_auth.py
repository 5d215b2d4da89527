"""Who calls the JSON API: API tokens, a running script's run token, and the browser's session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import APIKeyCookie, HttpBearer

from runs.selectors import RUN_NOT_FOUND, run_for_token
from trainhub.workspaces import selectors, services
from trainhub.workspaces.api_access import RunCredential
from trainhub.workspaces.models import ApiToken
from trainhub.workspaces.selectors import RUN_TOKEN_PREFIX

INVALID_TOKEN = "The API token is not valid: it is unknown, revoked, or its user was removed."
NOT_SIGNED_IN = "Sign in, or send an API token as 'Authorization: Bearer <token>'."
RUN_TOKEN_ENDED = "Run {run_id} has ended ({status}): its token stopped working with it."
RUN_TOKEN_REFUSED = (
    "A run's token only acts for its run (metrics, its files and inputs, registering its models); "
    "use an API token from the workspace's Tokens page for this."
)


class RunTokenEnded(AuthenticationError):
    """A run's token, sent after its run reached a final status."""

    def __init__(self, message: str):
        super().__init__(401, message)


class TokenAuth(HttpBearer):
    """API tokens, and the run tokens (`thr_`) of running scripts.

    This is the one place that keeps a run's token to its run: it is refused (403) on every
    endpoint whose auth is not IN_RUN, so a new endpoint is closed to runs unless marked; where
    it is accepted, a workspace or a run other than its own answers 404; once the run is final it
    answers 401 (after `ended_grace_seconds`, for the last metrics of ranks stopped by the end).
    """

    def __init__(self, *, run_tokens: bool = False, ended_grace_seconds: int = 0):
        super().__init__()
        self.run_tokens = run_tokens
        self.ended_grace_seconds = ended_grace_seconds

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | RunCredential | None:
        if token.startswith(RUN_TOKEN_PREFIX):
            return self._run_credential(request, token)
        api_token = selectors.active_token(token)
        if api_token is None:
            request.trainhub_bad_token = True  # type: ignore[attr-defined]
            return None
        services.token_touch(api_token)
        request.user = api_token.user
        return api_token

    def _run_credential(self, request: HttpRequest, token: str) -> RunCredential | None:
        run = run_for_token(token)
        if run is None or run.created_by is None:
            request.trainhub_bad_token = True  # type: ignore[attr-defined]
            return None
        if run.is_final and not self._in_grace(run):
            raise RunTokenEnded(RUN_TOKEN_ENDED.format(run_id=run.run_id, status=run.status))
        route = request.resolver_match.kwargs if request.resolver_match else {}
        workspace_name = route.get("workspace_name", run.workspace.name)
        if workspace_name != run.workspace.name:
            raise Http404(selectors.WORKSPACE_NOT_FOUND.format(name=workspace_name))
        if not self.run_tokens:
            raise PermissionDenied(RUN_TOKEN_REFUSED)
        if route.get("run_id", run.run_id) != run.run_id:
            raise Http404(RUN_NOT_FOUND.format(run_id=route["run_id"]))
        request.user = run.created_by
        return RunCredential(run)

    def _in_grace(self, run: Any) -> bool:
        if run.ended_at is None or not self.ended_grace_seconds:
            return False
        return run.ended_at >= timezone.now() - timedelta(seconds=self.ended_grace_seconds)


class SessionAuth(APIKeyCookie):
    """The browser's session, with Django's CSRF check on unsafe methods."""

    param_name = "sessionid"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if request.user.is_authenticated:
            return request.user
        return None


# The auth of the endpoints a running script may call with its run's token (see TokenAuth).
IN_RUN = [TokenAuth(run_tokens=True), SessionAuth(csrf=True)]
