"""Endpoint pages: the list, one endpoint (state, versions, replicas, URL, keys shown once, request
count and latency, its serving replica's live log, a form to try a request), regenerating a key,
deleting."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from endpoints import selectors, services
from runs.selectors import log_tail
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import Access

LOG_LINES_SHOWN = 200


@login_required
def endpoint_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    endpoints = list(selectors.endpoints_of(access.workspace)[:500])
    rows = [(e, selectors.serving_replicas(e), services.endpoint_stats(e.pk)) for e in endpoints]
    return workspace_page(request, access, "endpoints/endpoints.html", "endpoints", rows=rows)


def _detail(request: HttpRequest, access: Access, name: str, **extra) -> HttpResponse:
    endpoint = selectors.endpoint_get(access.workspace, name)
    replica = selectors.log_replica(endpoint)
    config = endpoint.deployment_config or {}
    limits = ", ".join(f"{k}={config[k]}" for k in ("cpu_cores", "memory_gb") if config.get(k) is not None)
    tail = [c.as_message() for c in log_tail(replica.run, max_lines=LOG_LINES_SHOWN)] if replica is not None else []
    return workspace_page(
        request,
        access,
        "endpoints/endpoint.html",
        "endpoints",
        endpoint=endpoint,
        versions=endpoint.model_versions.select_related("model").order_by("model__name", "version"),
        replicas=selectors.replicas_of(endpoint)[:20],
        serving_count=len(selectors.serving_replicas(endpoint)),
        limits=limits,
        log_replica=replica,
        tail=tail,
        stats=services.endpoint_stats(endpoint.pk),
        scoring_url=request.build_absolute_uri(selectors.scoring_path(endpoint)),
        **extra,
    )


@login_required
def endpoint_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    return _detail(request, access, name)


@login_required
@require_POST
def endpoint_key(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    """A new key, shown on this page once (get_keys() gives it again to contributors and owners)."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    endpoint = selectors.endpoint_get(access.workspace, name)
    key_type = request.POST.get("key_type", "Primary")
    try:
        key = services.endpoint_regenerate_key(access=access, endpoint=endpoint, key_type=key_type)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("endpoints:detail", workspace_name=workspace_name, name=name)
    return _detail(request, access, name, new_key=key, new_key_type=key_type)


@login_required
@require_POST
def endpoint_try(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    """The form's body sent to a serving replica, as the scoring URL would, and its answer shown."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    endpoint = selectors.endpoint_get(access.workspace, name)
    body = request.POST.get("body", "")[:100_000]
    status, answer = services.endpoint_try(endpoint=endpoint, body=body.encode())
    return _detail(request, access, name, tried=body, tried_status=status, tried_answer=answer)


@login_required
@require_POST
def endpoint_delete(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    services.endpoint_delete(access=access, endpoint=selectors.endpoint_get(access.workspace, name))
    messages.success(request, f"Endpoint {name} deleted: its replicas stop and free their nodes.")
    return redirect("endpoints:list", workspace_name=workspace_name)
