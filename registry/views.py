"""Model registry pages: the models list, a model's versions, a version with its files, lineage,
downloads and ONNX exports."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from registry import exports, selectors, services
from registry.archives import file_download, version_download
from registry.mlflow_models import mlflow_model_of
from trainhub.compute.selectors import clusters_of
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import signed_in_user

BAD_SHAPE_TEXT = "Write the sample input shape as numbers separated by commas, e.g. 1, 3, 224, 224."


@login_required
def model_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    search = request.GET.get("q", "")[:200]
    models = list(selectors.models_of(access.workspace, search=search)[:500])
    latest = selectors.latest_versions(models)
    return workspace_page(
        request,
        access,
        "registry/models.html",
        "models",
        rows=[(m, latest.get(m.pk)) for m in models],
        search=search,
    )


@login_required
def model_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    model = selectors.model_get(access.workspace, name)
    return workspace_page(
        request,
        access,
        "registry/model.html",
        "models",
        model=model,
        versions=selectors.versions_of(model),
    )


@login_required
def version_detail(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.version_get(access.workspace, name, version)
    return workspace_page(
        request,
        access,
        "registry/version.html",
        "models",
        version=found,
        files=selectors.files_of(found),
        exports=selectors.exports_of(found),
        mlflow_model=mlflow_model_of(found),
        exported_from=selectors.export_source_of(found),
        clusters=clusters_of(access.workspace),
        default_opset=exports.DEFAULT_OPSET,
        default_tolerance=exports.DEFAULT_TOLERANCE,
    )


@login_required
def version_download_view(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponseBase:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.version_get(access.workspace, name, version)
    return version_download(request, found, list(selectors.files_of(found)))


@login_required
def version_file(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponseBase:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.version_get(access.workspace, name, version)
    return file_download(request, selectors.file_get(found, request.GET.get("path", "")))


@login_required
@require_POST
def version_export(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.version_get(access.workspace, name, version)
    try:
        shape = [int(part) for part in request.POST.get("sample_input_shape", "").replace(" ", "").split(",")]
        opset = int(request.POST.get("opset") or exports.DEFAULT_OPSET)
        tolerance = float(request.POST.get("tolerance") or exports.DEFAULT_TOLERANCE)
    except ValueError:
        messages.error(request, BAD_SHAPE_TEXT)
        return redirect("registry:version", workspace_name=workspace_name, name=name, version=version)
    try:
        export = exports.onnx_export_start(
            access=access,
            user=signed_in_user(request),
            version=found,
            sample_input_shape=shape,
            opset=opset,
            tolerance=tolerance,
            compute_target=request.POST.get("compute_target") or None,
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"ONNX export started as run {export.run.run_id if export.run else '?'}.")
    return redirect("registry:version", workspace_name=workspace_name, name=name, version=version)


@login_required
@require_POST
def version_delete(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.version_get(access.workspace, name, version)
    services.version_delete(access=access, version=found)
    messages.success(request, f"Version {name}:{version} deleted; its number will not be given again.")
    return redirect("registry:model", workspace_name=workspace_name, name=name)
