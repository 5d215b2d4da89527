"""The JSON API root (/api/v1/): authentication, error shapes, and the routers of each app."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.security import APIKeyCookie, HttpBearer

from trainhub.workspaces import selectors, services
from trainhub.workspaces.models import ApiToken
from trainhub.workspaces.permissions import Access

INVALID_TOKEN = "The API token is not valid: it is unknown, revoked, or its user was removed."
NOT_SIGNED_IN = "Sign in, or send an API token as 'Authorization: Bearer <token>'."


class RunCredential:
    """What a running script authenticates with: the token its node gave it."""

    def __init__(self, run: Any):
        self.run = run
        self.workspace = run.workspace


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | RunCredential | None:
        if token.startswith("thr_"):
            from runs.selectors import run_for_token

            run = run_for_token(token)
            if run is None or run.created_by is None:
                request.trainhub_bad_token = True  # type: ignore[attr-defined]
                return None
            request.user = run.created_by
            return RunCredential(run)
        api_token = selectors.active_token(token)
        if api_token is None:
            request.trainhub_bad_token = True  # type: ignore[attr-defined]
            return None
        services.token_touch(api_token)
        request.user = api_token.user
        return api_token


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


def access(request: HttpRequest, workspace_name: str) -> Access:
    """The caller's access to a workspace; a token only ever reaches its own workspace."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, (ApiToken, RunCredential)) and auth.workspace.name != workspace_name:
        raise Http404(selectors.WORKSPACE_NOT_FOUND.format(name=workspace_name))
    member = selectors.access_for(request.user, workspace_name)
    if isinstance(auth, RunCredential) and member.role == "owner":
        # A run's token acts for the run, never as an owner of the workspace.
        return Access(workspace=member.workspace, role="contributor")
    return member


def _error(request: HttpRequest, message: str, status: int, code: str) -> HttpResponse:
    return api.create_response(request, {"detail": message, "code": code}, status=status)


@api.exception_handler(AuthenticationError)
def _on_authentication_error(request: HttpRequest, exc: Exception) -> HttpResponse:
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
    from metrics.api import router as metrics_router
    from registry.api import router as registry_router
    from runs.api import router as runs_router
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


_register_routers()
