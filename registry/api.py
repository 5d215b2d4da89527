"""Model registry endpoints of the JSON API: versions, uploads, tags, downloads, ONNX exports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from ninja import Query, Router, Schema, Status

from registry import exports, selectors, services
from registry.archives import file_download, version_download
from registry.models import ModelVersion, OnnxExport
from runs import selectors as run_selectors
from trainhub import uploads
from trainhub.api_auth import IN_RUN
from trainhub.idempotency.services import answer_once
from trainhub.workspaces.api_access import RunCredential, access
from trainhub.workspaces.permissions import signed_in_user

router = Router(tags=["models"])

SOURCE_CHOICE = "Register either from a run (run_id and model_path) or from uploaded files (files), not both."


class FileOut(Schema):
    path: str
    size: int
    sha256: str


class VersionOut(Schema):
    id: str
    name: str
    version: int
    root: str
    is_folder: bool
    size: int
    description: str
    tags: dict[str, str]
    properties: dict[str, str]
    framework: str
    framework_version: str
    run_id: str | None
    experiment: str | None
    environment: dict[str, Any] | None
    snapshot: str | None
    created_by: str | None
    created_at: datetime
    files: list[FileOut]
    portal_url: str


class FileRefIn(Schema):
    path: str
    sha256: str
    size: int


class RegisterIn(Schema):
    run_id: str | None = None
    model_path: str | None = None
    root: str | None = None
    is_folder: bool = False
    files: list[FileRefIn] | None = None
    tags: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    description: str = ""
    framework: str = "PyTorch"
    framework_version: str = ""


class TagsIn(Schema):
    add: dict[str, Any] = {}
    remove: list[str] = []


class BlobOut(Schema):
    sha256: str
    size: int


class ExportIn(Schema):
    sample_input_shape: list[int]
    opset: int = exports.DEFAULT_OPSET
    tolerance: float = exports.DEFAULT_TOLERANCE
    compute_target: str | None = None


class ExportOut(Schema):
    id: int
    source: str
    state: str
    reason: str
    run_id: str | None
    run_status: str | None
    sample_input_shape: list[int]
    opset: int
    tolerance: float
    max_abs_diff: float | None
    result: str | None
    details: dict[str, str]
    created_at: datetime


class ReportIn(Schema):
    passed: bool
    max_abs_diff: float | None = None
    message: str = ""
    onnx_sha256: str | None = None
    onnx_size: int | None = None
    details: dict[str, Any] = {}


def version_out(version: ModelVersion) -> VersionOut:
    workspace = version.model.workspace
    return VersionOut(
        id=f"{version.model.name}:{version.version}",
        name=version.model.name,
        version=version.version,
        root=version.root,
        is_folder=version.is_folder,
        size=version.size,
        description=version.description,
        tags=version.tags,
        properties=version.properties,
        framework=version.framework,
        framework_version=version.framework_version,
        run_id=version.run_identifier or None,
        experiment=version.experiment_name or None,
        environment={"name": version.environment_name, "version": version.environment_version}
        if version.environment_name
        else None,
        snapshot=version.snapshot_sha256 or None,
        created_by=version.created_by.get_username() if version.created_by else None,
        created_at=version.created_at,
        files=[FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in selectors.files_of(version)],
        portal_url=f"/w/{workspace.name}/models/{version.model.name}/{version.version}/",
    )


def export_out(export: OnnxExport) -> ExportOut:
    return ExportOut(
        id=export.pk,
        source=f"{export.source.model.name}:{export.source.version}",
        state=export.state,
        reason=export.reason,
        run_id=export.run.run_id if export.run else None,
        run_status=export.run.status if export.run else None,
        sample_input_shape=export.sample_input_shape,
        opset=export.opset,
        tolerance=export.tolerance,
        max_abs_diff=export.max_abs_diff,
        result=f"{export.result.model.name}:{export.result.version}" if export.result else None,
        details=export.details,
        created_at=export.created_at,
    )


@router.get("/{workspace_name}/models", response=list[VersionOut], auth=IN_RUN)
def list_versions(
    request: HttpRequest,
    workspace_name: str,
    name: str | None = None,
    tag: list[str] = Query([]),  # noqa: B008  (ninja's way to read a repeated query parameter)
    latest: bool = False,
) -> list[VersionOut]:
    member = access(request, workspace_name)
    found = selectors.versions_list(member.workspace, name=name, tags=tag or [], latest=latest)
    return [version_out(v) for v in found]


@router.post("/{workspace_name}/models/{name}/versions", response={201: VersionOut}, auth=IN_RUN)
def register_version(request: HttpRequest, workspace_name: str, name: str, payload: RegisterIn) -> Status[VersionOut]:
    member = access(request, workspace_name)
    from_run = payload.model_path is not None
    if from_run == (payload.files is not None):
        raise ValidationError(SOURCE_CHOICE)
    run_id = payload.run_id
    credential = getattr(request, "auth", None)
    if isinstance(credential, RunCredential):
        # A run's token registers from its own run only, and always with that run as lineage.
        if run_id not in (None, credential.run.run_id):
            raise Http404(run_selectors.RUN_NOT_FOUND.format(run_id=run_id))
        run_id = credential.run.run_id
    run = run_selectors.run_get(member.workspace, run_id) if run_id else None
    common: dict[str, Any] = {
        "access": member,
        "user": signed_in_user(request),
        "model_name": name,
        "tags": payload.tags,
        "properties": payload.properties,
        "description": payload.description,
        "framework": payload.framework,
        "framework_version": payload.framework_version,
    }
    if from_run and run is None:
        raise ValidationError(SOURCE_CHOICE)

    def register() -> tuple[int, dict[str, Any]]:
        if run is not None and payload.model_path is not None:  # from_run: run was checked above
            version = services.version_register_from_run(run=run, model_path=payload.model_path, **common)
        else:
            version = services.version_register_from_uploads(
                root=payload.root or "",
                is_folder=payload.is_folder,
                files=[
                    services.UploadedFileRef(path=f.path, sha256=f.sha256, size=f.size) for f in payload.files or []
                ],
                run=run,
                **common,
            )
        found = selectors.version_get(member.workspace, name, version.version)
        return 201, version_out(found).model_dump(mode="json")

    # A registration sent again with its Idempotency-Key (after a timeout) makes no second version.
    status, answer = answer_once(
        request=request,
        workspace=member.workspace,
        scope=f"models/{name}/versions",
        body=request.body,
        produce=register,
    )
    return Status(status, answer)


@router.get("/{workspace_name}/models/{name}", response=VersionOut, auth=IN_RUN)
def get_latest_version(request: HttpRequest, workspace_name: str, name: str) -> VersionOut:
    member = access(request, workspace_name)
    return version_out(selectors.version_get(member.workspace, name))


@router.get("/{workspace_name}/models/{name}/versions/{version}", response=VersionOut, auth=IN_RUN)
def get_version(request: HttpRequest, workspace_name: str, name: str, version: int) -> VersionOut:
    member = access(request, workspace_name)
    return version_out(selectors.version_get(member.workspace, name, version))


@router.patch("/{workspace_name}/models/{name}/versions/{version}/tags", response=VersionOut)
def update_tags(request: HttpRequest, workspace_name: str, name: str, version: int, payload: TagsIn) -> VersionOut:
    member = access(request, workspace_name)
    found = selectors.version_get(member.workspace, name, version)
    services.version_update_tags(access=member, version=found, add=payload.add, remove=payload.remove)
    return version_out(selectors.version_get(member.workspace, name, version))


@router.delete("/{workspace_name}/models/{name}/versions/{version}", response={204: None})
def delete_version(request: HttpRequest, workspace_name: str, name: str, version: int) -> Status[None]:
    member = access(request, workspace_name)
    services.version_delete(access=member, version=selectors.version_get(member.workspace, name, version))
    return Status(204, None)


@router.get("/{workspace_name}/models/{name}/versions/{version}/file", auth=IN_RUN)
def download_file(request: HttpRequest, workspace_name: str, name: str, version: int, path: str) -> HttpResponseBase:
    member = access(request, workspace_name)
    return file_download(request, selectors.file_get(selectors.version_get(member.workspace, name, version), path))


@router.get("/{workspace_name}/models/{name}/versions/{version}/download", auth=IN_RUN)
def download_version(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponseBase:
    member = access(request, workspace_name)
    found = selectors.version_get(member.workspace, name, version)
    return version_download(request, found, list(selectors.files_of(found)))


@router.get("/{workspace_name}/model-blobs/{sha256}", response=BlobOut, auth=IN_RUN)
def get_blob(request: HttpRequest, workspace_name: str, sha256: str) -> BlobOut:
    member = access(request, workspace_name)
    blob = selectors.blob_get(member.workspace, sha256)
    if blob is None:
        raise Http404(services.BLOB_UNKNOWN.format(sha=sha256))
    return BlobOut(sha256=blob.sha256, size=blob.size)


@router.put("/{workspace_name}/model-blobs/{sha256}", response={200: uploads.ProgressOut, 201: BlobOut}, auth=IN_RUN)
def put_blob(request: HttpRequest, workspace_name: str, sha256: str) -> Status[uploads.ProgressOut | BlobOut]:
    """A model file, whole or one `Content-Range` chunk at a time (resumable: trainhub/uploads.py)."""
    return uploads.put_answer(
        request,
        access(request, workspace_name),
        sha256,
        kind=services.BLOB_UPLOADS,
        receive=services.blob_receive,
        out=BlobOut,
    )


@router.post("/{workspace_name}/models/{name}/versions/{version}/onnx-exports", response={201: ExportOut})
def start_export(
    request: HttpRequest, workspace_name: str, name: str, version: int, payload: ExportIn
) -> Status[ExportOut]:
    member = access(request, workspace_name)
    export = exports.onnx_export_start(
        access=member,
        user=signed_in_user(request),
        version=selectors.version_get(member.workspace, name, version),
        sample_input_shape=payload.sample_input_shape,
        opset=payload.opset,
        tolerance=payload.tolerance,
        compute_target=payload.compute_target,
    )
    return Status(201, export_out(selectors.export_get(member.workspace, export.pk)))


@router.get("/{workspace_name}/onnx-exports/{export_id}", response=ExportOut)
def get_export(request: HttpRequest, workspace_name: str, export_id: int) -> ExportOut:
    member = access(request, workspace_name)
    return export_out(selectors.export_get(member.workspace, export_id))


@router.post("/{workspace_name}/onnx-exports/{export_id}/report", response=ExportOut, auth=IN_RUN)
def report_export(request: HttpRequest, workspace_name: str, export_id: int, payload: ReportIn) -> ExportOut:
    member = access(request, workspace_name)
    export = selectors.export_get(member.workspace, export_id)
    credential = getattr(request, "auth", None)
    if not isinstance(credential, RunCredential):
        raise PermissionDenied(exports.NOT_THIS_EXPORT)
    exports.onnx_export_report(
        access=member,
        export=export,
        run=credential.run,
        passed=payload.passed,
        max_abs_diff=payload.max_abs_diff,
        message=payload.message,
        onnx_sha256=payload.onnx_sha256,
        onnx_size=payload.onnx_size,
        details=payload.details,
    )
    return export_out(selectors.export_get(member.workspace, export_id))
