"""Writes of the model registry: register versions (from a run's stored files or uploaded blobs),
change their tags, delete them, and store uploaded blobs.

A version registered from a run references the run's stored files (`RunFile.storage_name`):
run history is immutable, so registering a 1 GB output writes no copy of it at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from registry.models import Model, ModelBlob, ModelFile, ModelVersion, model_name_validator
from registry.paths import clean_relative_path
from runs.models import Run
from trainhub import uploads
from trainhub.workspaces.models import Workspace
from trainhub.workspaces.permissions import Access, Action

NOT_IN_RUN = (
    "Run {run_id} has no stored file or folder {path!r}. Only files copied into the run's history "
    "(outputs/ and logs/, regular files: symlinks are never copied) can be registered; "
    "it has: {some}."
)
BLOB_TOO_LARGE = "The file is {size} bytes; the limit for a model file is {limit} bytes."
BLOB_HASH_MISMATCH = uploads.HASH_MISMATCH
BLOB_UNKNOWN = "No uploaded file {sha!r} in this workspace: upload it first."
BAD_SHA = uploads.BAD_SHA
NO_FILES = "A model version needs at least one file."
ROOT_NOT_A_NAME = "The registered file or folder is named by one path component, not {root!r}."
FILE_OUTSIDE_ROOT = "File {path!r} is not inside the registered folder {root!r}."
FILE_NOT_ROOT = "A single-file version holds exactly one file, named {root!r}."
DUPLICATE_PATH = "File {path!r} is listed twice."
BAD_TAGS = "{what} map names to values: at most {limit} of them, names of 1 to 100 characters."
SHA_PATTERN = uploads.SHA_PATTERN
TORCH_PIN = re.compile(r"^torch\s*==\s*([\w.+-]+)$")
MAX_TAGS = 100


@dataclass(frozen=True)
class UploadedFileRef:
    path: str
    sha256: str
    size: int


def _clean_mapping(values: dict[str, Any] | None, what: str) -> dict[str, str]:
    values = values or {}
    if not isinstance(values, dict) or len(values) > MAX_TAGS:
        raise ValidationError(BAD_TAGS.format(what=what, limit=MAX_TAGS))
    cleaned = {}
    for key, value in values.items():
        key = str(key).strip()
        if not key or len(key) > 100:
            raise ValidationError(BAD_TAGS.format(what=what, limit=MAX_TAGS))
        cleaned[key] = "" if value is None else str(value)[:1000]
    return cleaned


def torch_version_of(spec: Any) -> str:
    """The torch version an environment spec pins (`torch==X` anywhere in it), or ''."""
    if isinstance(spec, str):
        match = TORCH_PIN.match(spec.strip())
        return match.group(1) if match else ""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, list):
        for item in spec:
            found = torch_version_of(item)
            if found:
                return found
    return ""


def _next_version(access: Access, model_name: str) -> tuple[Model, int]:
    """Take the model's next number under a row lock (call inside a transaction).

    Two registrations at once queue on the lock of the model row (on SQLite, on the database
    write lock the IMMEDIATE transactions take), so neither can read the same counter."""
    model_name_validator(model_name)
    if not Model.objects.filter(workspace=access.workspace, name=model_name).exists():
        try:
            with transaction.atomic():
                Model.objects.create(workspace=access.workspace, name=model_name)
        except IntegrityError:
            pass  # created by a concurrent registration: lock that row below
    model = Model.objects.select_for_update().get(workspace=access.workspace, name=model_name)
    model.last_version += 1
    model.save(update_fields=["last_version", "updated_at"])
    return model, model.last_version


def _lineage(run: Run | None) -> dict[str, Any]:
    if run is None:
        return {}
    return {
        "run": run,
        "run_identifier": run.run_id,
        "experiment_name": run.experiment.name,
        "environment_name": run.environment_name,
        "environment_version": run.environment_version,
        "snapshot_sha256": run.snapshot.sha256,
    }


def _create_version(
    *,
    access: Access,
    user: User | None,
    model_name: str,
    root: str,
    is_folder: bool,
    files: list[dict[str, Any]],
    run: Run | None,
    tags: dict[str, Any] | None,
    properties: dict[str, Any] | None,
    description: str,
    framework: str,
    framework_version: str,
) -> ModelVersion:
    tags = _clean_mapping(tags, "Tags")
    properties = _clean_mapping(properties, "Properties")
    model, number = _next_version(access, model_name)
    version = ModelVersion.objects.create(
        model=model,
        version=number,
        root=root,
        is_folder=is_folder,
        size=sum(f["size"] for f in files),
        description=(description or "")[:10_000],
        tags=tags,
        properties=properties,
        framework=(framework or "PyTorch")[:40],
        framework_version=(framework_version or "")[:40],
        created_by=user if user is not None and user.is_authenticated else None,
        **_lineage(run),
    )
    ModelFile.objects.bulk_create([ModelFile(version=version, **f) for f in files])
    return version


# ---------------------------------------------------------------- from a run


def version_register_from_run(
    *,
    access: Access,
    user: User | None,
    run: Run,
    model_name: str,
    model_path: str,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str = "",
    framework: str = "PyTorch",
    framework_version: str = "",
) -> ModelVersion:
    """The next version of `model_name`, holding a file or folder of the run's stored files."""
    access.require(Action.WRITE)
    path = clean_relative_path(model_path)
    stored = run.files.all()
    exact = [f for f in stored if f.path == path]
    inside = exact or [f for f in stored if f.path.startswith(path + "/")]
    if not inside:
        some = ", ".join(f.path for f in stored[:10]) or "no files"
        raise ValidationError(NOT_IN_RUN.format(run_id=run.run_id, path=model_path, some=some))
    parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    root = path[len(parent) :]
    files = [
        {
            "path": f.path[len(parent) :],
            "size": f.size,
            "sha256": f.sha256,
            "storage_name": f.storage_name,
        }
        for f in inside
    ]
    with transaction.atomic():
        return _create_version(
            access=access,
            user=user,
            model_name=model_name,
            root=root,
            is_folder=not exact,
            files=files,
            run=run,
            tags=tags,
            properties=properties,
            description=description,
            framework=framework,
            framework_version=framework_version or torch_version_of(run.environment_spec),
        )


# ---------------------------------------------------------------- from uploaded files


def blob_limit_bytes() -> int:
    return settings.TRAINHUB_MODEL_MAX_BYTES


BLOB_UPLOADS = uploads.Kind(name="model-blobs", limit=blob_limit_bytes, too_large=BLOB_TOO_LARGE)


def _blob_of(workspace: Workspace, sha256: str) -> ModelBlob | None:
    return ModelBlob.objects.filter(workspace=workspace, sha256=sha256).first()


def _blob_commit(workspace: Workspace, sha256: str, staged: uploads.StagedFile) -> ModelBlob:
    """Move a checked upload into storage and record it; a new file sweeps forgotten ones."""
    blob, new = uploads.save_blob(ModelBlob, f"models/{workspace.pk}/blobs", workspace, sha256, staged)
    if new:
        blob_sweep_unattached()
    return blob


def blob_receive(*, access: Access, sha256: str, chunk: uploads.Chunk) -> ModelBlob | uploads.Progress:
    """Take one chunk of an uploaded model file: the blob once all of it arrived and matched its
    sha256, else how much of it the server holds (see trainhub/uploads.py)."""
    access.require(Action.WRITE)
    return uploads.receive(
        workspace=access.workspace,
        kind=BLOB_UPLOADS,
        sha256=sha256,
        chunk=chunk,
        existing=partial(_blob_of, access.workspace),
        commit=partial(_blob_commit, access.workspace),
    )


def blob_store(*, access: Access, sha256: str, stream: uploads.Readable) -> ModelBlob:
    """Store a model file the server reads itself (an ONNX export's result), checked, once."""
    access.require(Action.WRITE)
    return uploads.store_stream(
        workspace=access.workspace,
        kind=BLOB_UPLOADS,
        sha256=sha256,
        stream=stream,
        existing=partial(_blob_of, access.workspace),
        commit=partial(_blob_commit, access.workspace),
    )


def _delete_blobs(blobs: QuerySet[ModelBlob]) -> int:
    """Delete blobs no version holds (call inside a transaction); their files go after commit."""
    # Only the blobs' rows: PostgreSQL locks no row of the outer join's nullable side.
    orphans = list(blobs.select_for_update(of=("self",)).filter(files__isnull=True))
    names = [blob.storage_name for blob in orphans]
    ModelBlob.objects.filter(pk__in=[blob.pk for blob in orphans]).delete()

    def delete_files() -> None:
        for name in names:
            default_storage.delete(name)

    transaction.on_commit(delete_files)
    return len(orphans)


def blob_sweep_unattached(now: datetime | None = None) -> int:
    """Delete model files uploaded TRAINHUB_UPLOAD_STALE_SECONDS ago or more that no version
    holds (a client that uploaded, then never registered); runs whenever a new file is stored."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.TRAINHUB_UPLOAD_STALE_SECONDS)
    with transaction.atomic():
        return _delete_blobs(ModelBlob.objects.filter(created_at__lt=cutoff))


def version_register_from_uploads(
    *,
    access: Access,
    user: User | None,
    model_name: str,
    root: str,
    is_folder: bool,
    files: list[UploadedFileRef],
    run: Run | None = None,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str = "",
    framework: str = "PyTorch",
    framework_version: str = "",
) -> ModelVersion:
    """The next version of `model_name`, made of files uploaded to this workspace beforehand."""
    access.require(Action.WRITE)
    root = clean_relative_path(root, what="The registered name")
    if "/" in root:
        raise ValidationError(ROOT_NOT_A_NAME.format(root=root))
    if not files:
        raise ValidationError(NO_FILES)
    paths: set[str] = set()
    for ref in files:
        path = clean_relative_path(ref.path, what="A file path")
        if path in paths:
            raise ValidationError(DUPLICATE_PATH.format(path=path))
        paths.add(path)
        if is_folder and not path.startswith(root + "/"):
            raise ValidationError(FILE_OUTSIDE_ROOT.format(path=path, root=root))
        if not SHA_PATTERN.match(ref.sha256):
            raise ValidationError(BAD_SHA)
    if not is_folder and paths != {root}:
        raise ValidationError(FILE_NOT_ROOT.format(root=root))
    with transaction.atomic():
        blobs = {
            b.sha256: b
            for b in ModelBlob.objects.select_for_update().filter(
                workspace=access.workspace, sha256__in=[f.sha256 for f in files]
            )
        }
        rows = []
        for ref in files:
            blob = blobs.get(ref.sha256)
            if blob is None or blob.size != ref.size:
                raise ValidationError(BLOB_UNKNOWN.format(sha=ref.sha256))
            rows.append(
                {
                    "path": clean_relative_path(ref.path, what="A file path"),
                    "size": blob.size,
                    "sha256": blob.sha256,
                    "storage_name": blob.storage_name,
                    "blob": blob,
                }
            )
        return _create_version(
            access=access,
            user=user,
            model_name=model_name,
            root=root,
            is_folder=is_folder,
            files=rows,
            run=run,
            tags=tags,
            properties=properties,
            description=description,
            framework=framework,
            framework_version=framework_version,
        )


# ---------------------------------------------------------------- tags and deletion


def version_update_tags(
    *,
    access: Access,
    version: ModelVersion,
    add: dict[str, Any] | None = None,
    remove: list[str] | None = None,
) -> ModelVersion:
    access.require(Action.WRITE)
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        tags = dict(locked.tags)
        tags.update(_clean_mapping(add, "Tags"))
        for key in remove or []:
            tags.pop(str(key), None)
        locked.tags = _clean_mapping(tags, "Tags")
        locked.save(update_fields=["tags"])
    version.tags = locked.tags
    return version


def version_delete(*, access: Access, version: ModelVersion) -> None:
    """Delete a version; its number is never given again (the model keeps its counter).

    Uploaded files no other version holds are deleted with it; a run's files stay with the run."""
    access.require(Action.WRITE)
    with transaction.atomic():
        blob_ids = set(version.files.exclude(blob=None).values_list("blob_id", flat=True))
        version.delete()
        _delete_blobs(ModelBlob.objects.filter(pk__in=blob_ids))
