"""Datastore and dataset endpoints of the JSON API: datastores, their files, uploaded contents
(resumable, by sha256) and dataset versions."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from ninja import Router, Schema, Status

from datastores import selectors, services
from datastores.downloads import blob_download
from datastores.models import DatasetVersion, Datastore
from datastores.paths import clean_path
from trainhub import uploads
from trainhub.api_auth import IN_RUN
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import Action, signed_in_user

router = Router(tags=["datastores"])


class DatastoreOut(Schema):
    name: str
    is_default: bool
    created_at: datetime


class DatastoreIn(Schema):
    name: str


class FileOut(Schema):
    path: str
    size: int
    sha256: str


class FileIn(Schema):
    path: str
    sha256: str


class FilesIn(Schema):
    files: list[FileIn]
    overwrite: bool = False


class FileOutcome(Schema):
    path: str
    outcome: str


class BlobOut(Schema):
    sha256: str
    size: int


class DatasetVersionIn(Schema):
    sources: list[tuple[str, str]]
    description: str = ""
    create_new_version: bool = False


class DatasetVersionOut(Schema):
    name: str
    version: int
    description: str
    sources: list[list[str]]
    file_count: int
    size: int
    created_at: datetime


def datastore_out(datastore: Datastore) -> DatastoreOut:
    return DatastoreOut(name=datastore.name, is_default=datastore.is_default, created_at=datastore.created_at)


def version_out(version: DatasetVersion) -> DatasetVersionOut:
    return DatasetVersionOut(
        name=version.dataset.name,
        version=version.version,
        description=version.description,
        sources=version.sources,
        file_count=version.file_count,
        size=version.size,
        created_at=version.created_at,
    )


@router.get("/{workspace_name}/datastores", response=list[DatastoreOut], auth=IN_RUN)
def list_datastores(request: HttpRequest, workspace_name: str) -> list[DatastoreOut]:
    member = access(request, workspace_name)
    services.datastore_default(member.workspace)
    return [datastore_out(d) for d in selectors.datastores_of(member.workspace)]


@router.post("/{workspace_name}/datastores", response={201: DatastoreOut})
def create_datastore(request: HttpRequest, workspace_name: str, payload: DatastoreIn) -> Status[DatastoreOut]:
    member = access(request, workspace_name)
    return Status(201, datastore_out(services.datastore_create(access=member, name=payload.name)))


@router.get("/{workspace_name}/default-datastore", response=DatastoreOut, auth=IN_RUN)
def get_default_datastore(request: HttpRequest, workspace_name: str) -> DatastoreOut:
    return datastore_out(services.datastore_default(access(request, workspace_name).workspace))


@router.get("/{workspace_name}/datastores/{name}", response=DatastoreOut, auth=IN_RUN)
def get_datastore(request: HttpRequest, workspace_name: str, name: str) -> DatastoreOut:
    return datastore_out(selectors.datastore_get(access(request, workspace_name).workspace, name))


@router.get("/{workspace_name}/datastores/{name}/files", response=list[FileOut], auth=IN_RUN)
def list_files(request: HttpRequest, workspace_name: str, name: str, prefix: str = "") -> list[FileOut]:
    datastore = selectors.datastore_get(access(request, workspace_name).workspace, name)
    files = selectors.datastore_files(datastore, clean_path(prefix, what="prefix"))
    return [FileOut(path=f.path, size=f.blob.size, sha256=f.blob.sha256) for f in files]


@router.post("/{workspace_name}/datastores/{name}/files", response=list[FileOutcome])
def put_files(request: HttpRequest, workspace_name: str, name: str, payload: FilesIn) -> list[FileOutcome]:
    """Point paths at uploaded contents; `missing` ones are to be uploaded, then sent again."""
    member = access(request, workspace_name)
    member.require(Action.WRITE)
    datastore = selectors.datastore_get(member.workspace, name)
    outcomes = services.datastore_files_put(
        access=member,
        datastore=datastore,
        files=[(f.path, f.sha256) for f in payload.files],
        overwrite=payload.overwrite,
    )
    return [FileOutcome(path=path, outcome=outcome) for path, outcome in outcomes]


@router.get("/{workspace_name}/data-blobs/{sha256}", response=BlobOut, auth=IN_RUN)
def get_blob(request: HttpRequest, workspace_name: str, sha256: str) -> BlobOut:
    blob = selectors.blob_get(access(request, workspace_name).workspace, sha256)
    if blob is None:
        raise Http404(services.BLOB_UNKNOWN.format(sha=sha256))
    return BlobOut(sha256=blob.sha256, size=blob.size)


@router.get("/{workspace_name}/data-blobs/{sha256}/content", auth=IN_RUN)
def get_blob_content(request: HttpRequest, workspace_name: str, sha256: str) -> HttpResponseBase:
    """A file's content by its sha256 (what `Datastore.download` and `FileDataset.download` fetch)."""
    return blob_download(request, access(request, workspace_name).workspace, sha256)


@router.put("/{workspace_name}/data-blobs/{sha256}", response={200: uploads.ProgressOut, 201: BlobOut})
def put_blob(request: HttpRequest, workspace_name: str, sha256: str) -> Status[uploads.ProgressOut | BlobOut]:
    """A file's content, whole or one `Content-Range` chunk at a time (resumable: trainhub/uploads.py)."""
    return uploads.put_answer(
        request,
        access(request, workspace_name),
        sha256,
        kind=services.BLOB_UPLOADS,
        receive=services.blob_receive,
        out=BlobOut,
    )


class BatchOut(Schema):
    stored: int


@router.post("/{workspace_name}/data-blobs", response=BatchOut)
def post_blob_batch(request: HttpRequest, workspace_name: str) -> BatchOut:
    """Many small contents at once: an uncompressed tar of files named by their sha256, whose
    body fits one upload chunk (so it stays in memory, written once)."""
    member = access(request, workspace_name)
    member.require(Action.WRITE)
    declared = request.headers.get("Content-Length", "")
    if not declared.isdigit() or int(declared) > uploads.chunk_bytes():
        raise ValidationError(services.BAD_BATCH.format(limit=uploads.chunk_bytes()), code="upload_batch")
    return BatchOut(stored=services.blobs_store_batch(access=member, stream=request))


@router.post("/{workspace_name}/datasets/{name}/versions", response={201: DatasetVersionOut})
def register_dataset(
    request: HttpRequest, workspace_name: str, name: str, payload: DatasetVersionIn
) -> Status[DatasetVersionOut]:
    member = access(request, workspace_name)
    version = services.dataset_register(
        access=member,
        user=signed_in_user(request),
        name=name,
        sources=[(d, p) for d, p in payload.sources],
        description=payload.description,
        create_new_version=payload.create_new_version,
    )
    return Status(201, version_out(version))


@router.get("/{workspace_name}/datasets/{name}", response=DatasetVersionOut, auth=IN_RUN)
def get_latest_dataset(request: HttpRequest, workspace_name: str, name: str) -> DatasetVersionOut:
    return version_out(selectors.dataset_version_get(access(request, workspace_name).workspace, name))


@router.get("/{workspace_name}/datasets/{name}/versions/{version}", response=DatasetVersionOut, auth=IN_RUN)
def get_dataset_version(request: HttpRequest, workspace_name: str, name: str, version: int) -> DatasetVersionOut:
    return version_out(selectors.dataset_version_get(access(request, workspace_name).workspace, name, version))


@router.get("/{workspace_name}/datasets/{name}/versions/{version}/files", response=list[FileOut], auth=IN_RUN)
def list_dataset_files(request: HttpRequest, workspace_name: str, name: str, version: int) -> list[FileOut]:
    found = selectors.dataset_version_get(access(request, workspace_name).workspace, name, version)
    entries = selectors.dataset_version_files(found)
    return [FileOut(path=e.path, size=e.blob.size, sha256=e.blob.sha256) for e in entries]
