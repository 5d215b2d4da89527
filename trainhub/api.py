"""The JSON API root (/api/v1/): its error shapes, and the routers of each app."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError

from datastores.api import router as datastores_router
from endpoints.api import router as endpoints_router
from metrics.api import router as metrics_router
from registry.api import router as registry_router
from runs.api import router as runs_router
from runs.local_api import router as local_runs_router
from sweeps.api import router as sweeps_router
from trainhub.api_auth import INVALID_TOKEN, NOT_SIGNED_IN, RunTokenEnded, SessionAuth, TokenAuth
from trainhub.compute.api import catalog_router
from trainhub.compute.api import router as compute_router
from trainhub.environments.api import router as environments_router
from trainhub.workspaces.api import router as workspaces_router

api = NinjaAPI(
    title="TrainHub API",
    version="1",
    urls_namespace="api",
    auth=[TokenAuth(), SessionAuth(csrf=True)],
)


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


api.add_router("/workspaces", workspaces_router)
api.add_router("/workspaces", compute_router)
api.add_router("/workspaces", environments_router)
api.add_router("/vm-sizes", catalog_router)
api.add_router("/workspaces", runs_router)
api.add_router("/workspaces", local_runs_router)
api.add_router("/workspaces", registry_router)
api.add_router("/workspaces", metrics_router)
api.add_router("/workspaces", datastores_router)
api.add_router("/workspaces", sweeps_router)
api.add_router("/workspaces", endpoints_router)
