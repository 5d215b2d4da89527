"""Reads of datastores and datasets: listings, one object by name (404 outside the workspace),
the files a path or pattern names, and the runs that used them."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet, Sum
from django.http import Http404

from datastores.models import DataBlob, Dataset, DatasetVersion, Datastore, DatastoreFile, RunInput
from datastores.paths import GLOB_CHARACTERS, clean_path, pattern_regex, static_prefix
from runs.models import Run
from trainhub.workspaces.models import Workspace

DATASTORE_UNKNOWN = "No datastore named {name!r} in this workspace."
DATASET_UNKNOWN = "No dataset named {name!r} in this workspace."
VERSION_UNKNOWN = "Dataset {name!r} has no version {version}."
NOTHING_AT_PATH = "Datastore {datastore!r} has no file or folder {path!r}."
PATTERN_MATCHES_NOTHING = "The pattern {pattern!r} matches no file of datastore {datastore!r}."
SAME_PATH_TWICE = "Two files would both be at {path!r}: give patterns whose files have distinct paths."


@dataclass(frozen=True)
class FileEntry:
    """A file as a run or dataset sees it: its path there, and its stored content."""

    path: str
    blob: DataBlob


def datastores_of(workspace: Workspace) -> QuerySet[Datastore]:
    return Datastore.objects.filter(workspace=workspace)


def datastore_get(workspace: Workspace, name: str) -> Datastore:
    found = Datastore.objects.filter(workspace=workspace, name=name).first()
    if found is None:
        raise Http404(DATASTORE_UNKNOWN.format(name=name))
    return found


def datastore_files(datastore: Datastore, prefix: str = "") -> QuerySet[DatastoreFile]:
    files = datastore.files.select_related("blob")
    return files.filter(path__startswith=prefix.rstrip("/") + "/") if prefix else files


def blob_get(workspace: Workspace, sha256: str) -> DataBlob | None:
    return DataBlob.objects.filter(workspace=workspace, sha256=sha256).first()


def files_at(datastore: Datastore, path: str) -> tuple[list[FileEntry], str]:
    """The files a datastore path names, relative to it, and the file's name when it names one file."""
    if path:
        single = datastore_files(datastore).filter(path=path).first()
        if single is not None:
            name = path.rsplit("/", 1)[-1]
            return [FileEntry(name, single.blob)], name
    found = [FileEntry(f.path[len(path) + 1 :] if path else f.path, f.blob) for f in datastore_files(datastore, path)]
    if not found:
        raise ValidationError(NOTHING_AT_PATH.format(datastore=datastore.name, path=path or "/"))
    return found, ""


def files_matching(workspace: Workspace, sources: list[tuple[str, str]]) -> list[FileEntry]:
    """The files (datastore, pattern) pairs match, each named relative to its pattern's fixed folder."""
    entries: dict[str, FileEntry] = {}
    for datastore_name, pattern in sources:
        datastore = datastore_get(workspace, datastore_name)
        regex, prefix = pattern_regex(pattern), static_prefix(pattern)
        matched = [f for f in datastore_files(datastore, prefix) if regex.fullmatch(f.path)]
        if not matched:
            raise ValidationError(PATTERN_MATCHES_NOTHING.format(pattern=pattern, datastore=datastore_name))
        folder = clean_path(pattern)
        if not GLOB_CHARACTERS.search(pattern) and all(f.path.startswith(folder + "/") for f in matched):
            # The cloud SDK's common-prefix rule: (ds, 'cifar-10') is the folder's contents, not
            # a cifar-10/ folder inside the input.
            prefix = folder
        for stored in matched:
            path = stored.path[len(prefix) + 1 :] if prefix else stored.path
            if path in entries and entries[path].blob.pk != stored.blob_id:
                raise ValidationError(SAME_PATH_TWICE.format(path=path))
            entries[path] = FileEntry(path, stored.blob)
    return sorted(entries.values(), key=lambda entry: entry.path)


def datasets_of(workspace: Workspace) -> QuerySet[Dataset]:
    return Dataset.objects.filter(workspace=workspace)


def dataset_get(workspace: Workspace, name: str) -> Dataset:
    found = Dataset.objects.filter(workspace=workspace, name=name).first()
    if found is None:
        raise Http404(DATASET_UNKNOWN.format(name=name))
    return found


def dataset_version_get(workspace: Workspace, name: str, version: int | None = None) -> DatasetVersion:
    """A version of a dataset, the latest when `version` is None."""
    versions = dataset_get(workspace, name).versions.select_related("dataset", "created_by")
    found = versions.first() if version is None else versions.filter(version=version).first()
    if found is None:
        raise Http404(VERSION_UNKNOWN.format(name=name, version=version if version is not None else "at all"))
    return found


def dataset_version_files(version: DatasetVersion) -> list[FileEntry]:
    return [FileEntry(f.path, f.blob) for f in version.files.select_related("blob")]


def inputs_of(run: Run) -> QuerySet[RunInput]:
    return run.inputs.select_related("datastore", "dataset_version", "dataset_version__dataset")


def inputs_using_datastore(datastore: Datastore) -> QuerySet[RunInput]:
    return RunInput.objects.filter(datastore=datastore).select_related("run").order_by("-run_id")


def inputs_using_version(version: DatasetVersion) -> QuerySet[RunInput]:
    return version.run_inputs.select_related("run").order_by("-run_id")


def datastores_with_totals(workspace: Workspace) -> QuerySet[Datastore]:
    return datastores_of(workspace).annotate(file_count=Count("files"), size=Sum("files__blob__size"))


def datasets_with_latest(workspace: Workspace) -> list[tuple[Dataset, DatasetVersion | None]]:
    datasets = list(datasets_of(workspace))
    latest = {
        v.dataset_id: v for v in DatasetVersion.objects.filter(dataset__in=datasets).order_by("dataset_id", "version")
    }
    return [(dataset, latest.get(dataset.pk)) for dataset in datasets]


def versions_with_use(dataset: Dataset) -> QuerySet[DatasetVersion]:
    return dataset.versions.select_related("created_by").annotate(run_count=Count("run_inputs__run", distinct=True))
