"""The JSON API root (/api/v1/): authentication, error shapes, and the routers of each app."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.security import APIKeyCookie, HttpBearer

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
        from runs.selectors import RUN_NOT_FOUND, run_for_token

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


api = NinjaAPI(
    title="TrainHub API",
    version="1",
    urls_namespace="api",
    auth=[TokenAuth(), SessionAuth(csrf=True)],
)

# The auth of the endpoints a running script may call with its run's token (see TokenAuth).
IN_RUN = [TokenAuth(run_tokens=True), SessionAuth(csrf=True)]


def _error(request: HttpRequest, message: str, status: int, code: str) -> HttpResponse:
    return api.create_response(request, {"detail": message, "code": code}, status=status)


@api.exception_handler(AuthenticationError)
def _on_authentication_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, RunTokenEnded):
        return _error(request, exc.message, 401, "run_ended")
    if getattr(request, "trainhub_bad_token", False):
        return _error(request, INVALID_TOKEN, 401, "invalid_token")
    return _error(request, NOT_SIGNED_IN, 401, "not_authenticated")


@api.exception_handler(Http404)
def _on_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, str(exc) or "Not found.", 404, "not_found")


@api.exception_handler(PermissionDenied)
def _on_permission_denied(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, str(exc) or "You may not do that.", 403, "permission_denied")


@api.exception_handler(ValidationError)
def _on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if hasattr(exc, "error_dict"):
        message = " ".join(f"{m}" for msgs in exc.message_dict.values() for m in msgs)
    else:
        message = " ".join(exc.messages)
    return _error(request, message, 400, getattr(exc, "code", None) or "invalid")


def _register_routers() -> None:
    from datastores.api import router as datastores_router
    from endpoints.api import router as endpoints_router
    from metrics.api import router as metrics_router
    from registry.api import router as registry_router
    from runs.api import router as runs_router
    from sweeps.api import router as sweeps_router
    from trainhub.compute.api import catalog_router
    from trainhub.compute.api import router as compute_router
    from trainhub.environments.api import router as environments_router
    from trainhub.workspaces.api import router as workspaces_router

    api.add_router("/workspaces", workspaces_router)
    api.add_router("/workspaces", compute_router)
    api.add_router("/workspaces", environments_router)
    api.add_router("/vm-sizes", catalog_router)
    api.add_router("/workspaces", runs_router)
    api.add_router("/workspaces", registry_router)
    api.add_router("/workspaces", metrics_router)
    api.add_router("/workspaces", datastores_router)
    api.add_router("/workspaces", sweeps_router)
    api.add_router("/workspaces", endpoints_router)


_register_routers()
