"""`Dataset`: named, numbered file lists drawn from datastores (`Dataset.File.from_files`), handed
to runs with `dataset.as_named_input('fowl').as_mount()` (or `.as_download()`)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._data_reference import MOUNT, DataInput
from trainhub.sdk.datastore import download_files


def _source(path: Any) -> list[str]:
    """(datastore, pattern) or a datastore path `ds.path('fowl')` as [datastore name, pattern]."""
    if isinstance(path, tuple) and len(path) == 2:
        return [getattr(path[0], "name", str(path[0])), str(path[1])]
    datastore = getattr(path, "datastore", None)
    if datastore is not None:
        return [datastore.name, path.path_on_datastore or "**"]
    raise exceptions.UserErrorException(
        f"A file dataset's path is (datastore, 'pattern') or ds.path('folder'), not {path!r}."
    )


class FileDataset(DataInput):
    """Files matched in datastores; registered, a numbered immutable version of a named dataset."""

    def __init__(
        self,
        sources: list[list[str]],
        workspace: Any = None,
        name: str | None = None,
        version: int | None = None,
        details: dict[str, Any] | None = None,
        input_name: str | None = None,
        mode: str = MOUNT,
    ):
        self.sources = sources
        self.workspace = workspace
        self.name = name
        self.version = version
        self.details = details or {}
        self.input_name = input_name
        self.mode = mode

    @classmethod
    def _from_answer(cls, workspace: Any, answer: dict[str, Any]) -> FileDataset:
        return cls(answer["sources"], workspace, answer["name"], answer["version"], answer)

    @property
    def id(self) -> str | None:
        return f"{self.name}:{self.version}" if self.name else None

    def register(
        self,
        workspace: Any,
        name: str,
        description: str | None = None,
        tags: dict | None = None,
        create_new_version: bool = False,
    ) -> FileDataset:
        answer = workspace._store.register_dataset(
            name, {"sources": self.sources, "description": description or "", "create_new_version": create_new_version}
        )
        return FileDataset._from_answer(workspace, answer)

    def _copy(self, **changes: Any) -> FileDataset:
        values = dict(
            sources=self.sources,
            workspace=self.workspace,
            name=self.name,
            version=self.version,
            details=self.details,
            input_name=self.input_name,
            mode=self.mode,
        )
        return FileDataset(**dict(values, **changes))

    def to_path(self) -> list[str]:
        """The paths of the version's files, as a run's input folder holds them ('/'-separated)."""
        return ["/" + entry["path"] for entry in self._files()]

    def download(
        self, target_path: str | None = None, overwrite: bool = False, show_progress: bool = False
    ) -> list[str]:
        """Download the version's files into `target_path` (a new temporary folder when None), each
        checked against its sha256; a file already there is kept unless `overwrite`. Their paths."""
        files = self._files()
        target = str(target_path) if target_path is not None else tempfile.mkdtemp(prefix=f"{self.name}-")
        download_files(self.workspace, files, target, overwrite=overwrite, show_progress=show_progress)
        return [os.path.join(target, *entry["path"].split("/")) for entry in files]

    def _files(self) -> list[dict[str, Any]]:
        if self.name is None or self.workspace is None:
            raise exceptions.UserErrorException(
                "Register the dataset first (dataset.register(ws, name)): its files are fixed when it is registered."
            )
        return self.workspace._store.list_dataset_files(self.name, self.version)

    def as_named_input(self, name: str) -> FileDataset:
        return self._copy(input_name=name)

    def _with_mode(self, mode: str) -> FileDataset:
        return self._copy(mode=mode)

    def _description(self) -> dict[str, Any]:
        if self.name is None:
            return {"kind": "files", "sources": self.sources, "name": self.input_name}
        return {"kind": "dataset", "dataset": self.name, "version": self.version, "name": self.input_name}

    def __repr__(self) -> str:
        return f"FileDataset(name={self.name!r}, version={self.version!r}, sources={self.sources!r})"


class _FileFactory:
    @staticmethod
    def from_files(path: Any, validate: bool = True) -> FileDataset:
        """Files of datastores: (datastore, 'pattern') pairs or `ds.path(...)`. A folder without
        wildcards ((ds, 'cifar-10')) gives its contents, named relative to it."""
        paths = path if isinstance(path, list) else [path]
        return FileDataset([_source(p) for p in paths])

    @staticmethod
    def upload_directory(
        src_dir: str | os.PathLike[str],
        target: Any,
        pattern: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> FileDataset:
        """Upload `src_dir` to `target` = (datastore, 'folder') and return the files as an
        (unregistered) file dataset of that folder's contents."""
        if pattern is not None:
            raise exceptions.UserErrorException(
                "upload_directory(pattern=...) is not supported: upload the folder, then pick files "
                "with Dataset.File.from_files((datastore, 'folder/pattern'))."
            )
        if not (isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "upload")):
            raise exceptions.UserErrorException(f"upload_directory's target is (datastore, 'folder'), not {target!r}.")
        datastore, folder = target
        datastore.upload(src_dir, target_path=folder, overwrite=overwrite, show_progress=show_progress)
        return FileDataset([[datastore.name, str(folder).strip("/") or "**"]])


class Dataset:
    File = _FileFactory()

    @staticmethod
    def get_by_name(workspace: Any, name: str, version: int | str = "latest") -> FileDataset:
        return FileDataset._from_answer(workspace, workspace._store.get_dataset(name, version))
