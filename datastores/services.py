"""Writes of datastores and datasets: datastores, uploaded contents (by sha256, resumable, through
trainhub/uploads.py), the files at a datastore's paths, dataset versions, and the inputs of a run."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import tarfile
from datetime import datetime, timedelta
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from datastores import selectors
from datastores.models import (
    DEFAULT_DATASTORE,
    DataBlob,
    Dataset,
    DatasetFile,
    DatasetVersion,
    Datastore,
    DatastoreFile,
    InputMode,
    RunInput,
)
from datastores.paths import clean_path
from runs.models import ACTIVE_STATUSES, Run
from trainhub import uploads
from trainhub.workspaces.models import Workspace, name_validator
from trainhub.workspaces.permissions import Access, Action

DATASTORE_EXISTS = "Workspace {workspace!r} already has a datastore named {name!r}."
BLOB_UNKNOWN = "No uploaded file {sha!r} in this workspace: upload its content first."
FILE_PATH_EMPTY = "Each file needs a path inside the datastore, not the datastore's root."
TOO_MANY_FILES = "At most {limit} files per request."
DATASET_EXISTS = (
    "Dataset {name!r} already exists (version {version}): pass create_new_version=True to register the next version."
)
NO_SOURCES = "A file dataset needs at least one (datastore, path pattern) pair."
BAD_BATCH = (
    "A batch of small files is an uncompressed tar whose members are regular files named by the sha256 "
    "of their content, at most {limit} bytes in all."
)
BAD_MARKER = "A data argument of this run could not be read: submit it through the TrainHub SDK."
BAD_INPUT_NAME = "An input name is 1 to 63 letters, digits or '_', starting with a letter: not {name!r}."
INPUT_NAME_TWICE = "Two inputs of this run are both named {name!r}: give them distinct names with as_named_input()."
MARKER = re.compile(r"\{\{trainhub-input:([A-Za-z0-9_=-]+)\}\}")
INPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_FILES_PER_REQUEST = 5000

STORED = "stored"
SKIPPED = "skipped"
KEPT = "kept"
MISSING = "missing"


def blob_limit_bytes() -> int:
    return settings.TRAINHUB_DATASTORE_MAX_FILE_BYTES


BLOB_UPLOADS = uploads.Kind(name="data-blobs", limit=blob_limit_bytes)


# ---------------------------------------------------------------- datastores


def datastore_default(workspace: Workspace) -> Datastore:
    """The workspace's default datastore, made the first time anyone asks for it."""
    datastore, _ = Datastore.objects.get_or_create(workspace=workspace, name=DEFAULT_DATASTORE)
    return datastore


def datastore_create(*, access: Access, name: str) -> Datastore:
    access.require(Action.WRITE)
    name_validator(name)
    try:
        with transaction.atomic():
            return Datastore.objects.create(workspace=access.workspace, name=name)
    except IntegrityError:
        raise ValidationError(DATASTORE_EXISTS.format(workspace=access.workspace.name, name=name)) from None


# ---------------------------------------------------------------- uploaded contents


def _blob_commit(workspace: Workspace, sha256: str, staged: uploads.StagedFile, sweep: bool = True) -> DataBlob:
    """Move a checked upload into storage and record it; a new content sweeps forgotten ones
    (a batch sweeps once, after its last)."""
    blob, new = uploads.save_blob(DataBlob, f"datastores/{workspace.pk}/blobs", workspace, sha256, staged)
    if new and sweep:
        blob_sweep_unheld()
    return blob


def blob_sweep_unheld(now: datetime | None = None) -> int:
    """Delete contents uploaded TRAINHUB_UPLOAD_STALE_SECONDS ago or more that no datastore file,
    dataset version or unfinished run's input holds: a content sent for a path another client took
    meanwhile (the SDK sends a large file to a new path as it hashes it, before the path is set), a
    client that uploaded and never set its path, a content an overwrite replaced. How many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.TRAINHUB_UPLOAD_STALE_SECONDS)
    with transaction.atomic():
        candidates = DataBlob.objects.select_for_update(of=("self",)).filter(
            created_at__lt=cutoff, datastore_files__isnull=True, dataset_files__isnull=True
        )
        orphans = {(blob.workspace_id, blob.sha256): blob for blob in candidates}
        if not orphans:
            return 0
        for workspace_pk, files in RunInput.objects.filter(run__status__in=ACTIVE_STATUSES).values_list(
            "run__workspace_id", "files"
        ):
            for _, sha256, _ in files:
                orphans.pop((workspace_pk, sha256), None)
        names = [blob.storage_name for blob in orphans.values()]
        DataBlob.objects.filter(pk__in=[blob.pk for blob in orphans.values()]).delete()

        def delete_files() -> None:
            for name in names:
                default_storage.delete(name)

        transaction.on_commit(delete_files)
    return len(names)


def blob_receive(*, access: Access, sha256: str, chunk: uploads.Chunk) -> DataBlob | uploads.Progress:
    """Take one chunk of a datastore file's content: the blob once all of it arrived and matched
    its sha256, else how much the server holds (resumable: trainhub/uploads.py)."""
    access.require(Action.WRITE)
    return uploads.receive(
        workspace=access.workspace,
        kind=BLOB_UPLOADS,
        sha256=sha256,
        chunk=chunk,
        existing=partial(selectors.blob_get, access.workspace),
        commit=partial(_blob_commit, access.workspace),
    )


def _batch_members(body: bytes) -> list[tuple[str, IO[bytes]]]:
    """The members of a batch, each a regular file named by a sha256 (name, content), or a ValidationError."""
    refused = ValidationError(BAD_BATCH.format(limit=uploads.chunk_bytes()), code="upload_batch")
    if len(body) > uploads.chunk_bytes():
        raise refused
    try:
        archive = tarfile.open(fileobj=io.BytesIO(body), mode="r:")
        members = archive.getmembers()
    except tarfile.TarError:
        raise refused from None
    contents: list[tuple[str, IO[bytes]]] = []
    for member in members:
        content = archive.extractfile(member) if member.isfile() else None
        if content is None or not uploads.SHA_PATTERN.match(member.name):
            raise refused
        contents.append((member.name, content))
    return contents


def blobs_store_batch(*, access: Access, stream: uploads.Readable) -> int:
    """Store many small contents sent in one request (an uncompressed tar, at most one upload chunk,
    of files named by their sha256), each checked like a single upload: one request instead of two
    per file, one query for what is there already, one transaction. How many were new."""
    access.require(Action.WRITE)
    members = _batch_members(stream.read(uploads.chunk_bytes() + 1))
    present = set(
        DataBlob.objects.filter(workspace=access.workspace, sha256__in=[name for name, _ in members]).values_list(
            "sha256", flat=True
        )
    )
    names: list[str] = []
    try:
        with transaction.atomic():
            for sha256, content in members:
                if sha256 in present:
                    continue
                present.add(sha256)
                blob = uploads.store_stream(
                    workspace=access.workspace,
                    kind=BLOB_UPLOADS,
                    sha256=sha256,
                    stream=content,
                    existing=lambda _: None,  # looked up above; a racing copy is caught when it is recorded
                    commit=partial(_blob_commit, access.workspace, sweep=False),
                )
                names.append(blob.storage_name)
            if names:
                blob_sweep_unheld()
    except BaseException:
        for name in names:  # refused: the files of the rolled-back rows go too
            if not DataBlob.objects.filter(storage_name=name).exists():
                default_storage.delete(name)
        raise
    return len(names)


# ---------------------------------------------------------------- files of a datastore


def _outcome(current: DatastoreFile | None, blob: DataBlob | None, overwrite: bool) -> str:
    if current is not None and blob is not None and current.blob_id == blob.pk:
        return SKIPPED
    if current is not None and not overwrite:
        return KEPT
    return MISSING if blob is None else STORED


def datastore_files_put(
    *, access: Access, datastore: Datastore, files: list[tuple[str, str]], overwrite: bool
) -> list[tuple[str, str]]:
    """Point each path at an uploaded content; per path, what happened: `stored`, `skipped` (the
    same content is there already), `kept` (other content is there and overwrite is off) or
    `missing` (the content is not uploaded yet: upload it, then ask again). All paths are checked
    before any is written, and all are written in a few queries, not a few per file."""
    access.require(Action.WRITE)
    if len(files) > MAX_FILES_PER_REQUEST:
        raise ValidationError(TOO_MANY_FILES.format(limit=MAX_FILES_PER_REQUEST))
    cleaned = dict((clean_path(path, what="target path"), sha256) for path, sha256 in files)
    for path, sha256 in cleaned.items():
        if not path:
            raise ValidationError(FILE_PATH_EMPTY)
        if not uploads.SHA_PATTERN.match(sha256):
            raise ValidationError(uploads.BAD_SHA)
    blobs = {b.sha256: b for b in DataBlob.objects.filter(workspace=access.workspace, sha256__in=cleaned.values())}
    with transaction.atomic():
        current = {f.path: f for f in datastore.files.select_for_update().filter(path__in=cleaned)}
        outcomes = {path: _outcome(current.get(path), blobs.get(sha), overwrite) for path, sha in cleaned.items()}
        stored = [(path, blobs[cleaned[path]]) for path, outcome in outcomes.items() if outcome == STORED]
        now = timezone.now()
        for path, blob in stored:
            if path in current:
                current[path].blob, current[path].updated_at = blob, now
        DatastoreFile.objects.bulk_update([current[p] for p, _ in stored if p in current], ["blob", "updated_at"])
        DatastoreFile.objects.bulk_create(
            DatastoreFile(datastore=datastore, path=p, blob=b) for p, b in stored if p not in current
        )
    return list(outcomes.items())


# ---------------------------------------------------------------- datasets


def _next_dataset_version(access: Access, name: str, create_new_version: bool) -> tuple[Dataset, int]:
    """Take the dataset's next number under a row lock (call inside a transaction)."""
    name_validator(name)
    dataset, _ = Dataset.objects.get_or_create(workspace=access.workspace, name=name)
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if dataset.last_version and not create_new_version:
        raise ValidationError(DATASET_EXISTS.format(name=name, version=dataset.last_version), code="dataset_exists")
    dataset.last_version += 1
    dataset.save(update_fields=["last_version"])
    return dataset, dataset.last_version


def dataset_register(
    *,
    access: Access,
    user: User | None,
    name: str,
    sources: list[tuple[str, str]],
    description: str = "",
    create_new_version: bool = False,
) -> DatasetVersion:
    """Register what the (datastore, pattern) pairs match now as the dataset's next version: later
    uploads to the datastore do not change it."""
    access.require(Action.WRITE)
    if not sources:
        raise ValidationError(NO_SOURCES)
    entries = selectors.files_matching(access.workspace, sources)
    with transaction.atomic():
        dataset, number = _next_dataset_version(access, name, create_new_version)
        version = DatasetVersion.objects.create(
            dataset=dataset,
            version=number,
            description=description[:2000],
            sources=[list(source) for source in sources],
            file_count=len(entries),
            size=sum(entry.blob.size for entry in entries),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        DatasetFile.objects.bulk_create(DatasetFile(version=version, path=e.path, blob=e.blob) for e in entries)
    return version


# ---------------------------------------------------------------- the inputs of a run


def _read_marker(encoded: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(encoded.encode()))
    except (binascii.Error, ValueError):
        raise ValidationError(BAD_MARKER) from None
    if not isinstance(value, dict) or value.get("mode") not in InputMode.values:
        raise ValidationError(BAD_MARKER)
    return value


def _input_for(run: Run, marker: dict[str, Any]) -> RunInput:
    """An unsaved RunInput for one data argument, its files resolved and frozen now."""
    workspace = run.workspace
    run_input = RunInput(run=run, mode=marker["mode"])
    kind = marker.get("kind")
    if kind == "datastore":
        run_input.datastore = selectors.datastore_get(workspace, str(marker.get("datastore", "")))
        run_input.datastore_path = clean_path(marker.get("path"))
        entries, run_input.single_file = selectors.files_at(run_input.datastore, run_input.datastore_path)
        fallback = run_input.datastore_path.rsplit("/", 1)[-1] or run_input.datastore.name
    elif kind == "dataset":
        version = marker.get("version")
        run_input.dataset_version = selectors.dataset_version_get(
            workspace, str(marker.get("dataset", "")), int(version) if version is not None else None
        )
        entries = selectors.dataset_version_files(run_input.dataset_version)
        fallback = run_input.dataset_version.dataset.name
    elif kind == "files":
        entries = selectors.files_matching(workspace, [(str(d), str(p)) for d, p in marker.get("sources") or []])
        fallback = "files"
    else:
        raise ValidationError(BAD_MARKER)
    run_input.name = str(marker.get("name") or re.sub(r"\W", "_", fallback))
    if not INPUT_NAME.match(run_input.name):
        raise ValidationError(BAD_INPUT_NAME.format(name=run_input.name))
    run_input.files = [[e.path, e.blob.sha256, e.blob.size] for e in entries]
    run_input.size = sum(e.blob.size for e in entries)
    return run_input


def run_inputs_record(*, run: Run) -> None:
    """Turn the data arguments of a submitted run (the SDK's `{{trainhub-input:…}}` markers) into
    recorded inputs, and each marker into `${TRAINHUB_INPUT_<name>}`, which the node expands to the
    input's local path. Call inside the submission's transaction: a bad input submits nothing."""
    inputs: dict[str, RunInput] = {}

    def replace(match: re.Match[str]) -> str:
        run_input = _input_for(run, _read_marker(match.group(1)))
        same = inputs.get(run_input.name)
        if same is not None and (same.files, same.mode) != (run_input.files, run_input.mode):
            raise ValidationError(INPUT_NAME_TWICE.format(name=run_input.name))
        inputs[run_input.name] = run_input
        return "${" + run_input.env_name + "}"

    arguments = [MARKER.sub(replace, str(argument)) for argument in run.arguments]
    command = [MARKER.sub(replace, str(part)) for part in run.command]
    if not inputs:
        return
    Run.objects.filter(pk=run.pk).update(arguments=arguments, command=command)
    run.arguments, run.command = arguments, command
    RunInput.objects.bulk_create(inputs.values())
