"""`Datastore`: a named folder of files in the workspace (the guide's `Datastore`), uploaded once
and handed to runs: `ds.path('fowl').as_mount()`, `.as_download()`, or the datastore itself."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._data_reference import MOUNT, DataInput
from trainhub.sdk._downloads import download_checked, target_inside
from trainhub.sdk._uploads import CHUNK_BYTES, file_identity, known_sha256, progress_bar, remember_sha256

FILES_PER_REQUEST = 1000
PARALLEL_UPLOADS = 4
SMALL_FILE_BYTES = 256 * 1024
BATCH_BYTES = 4 * 1024 * 1024
HASH_BYTES = 4 << 20


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _batches(files: list[tuple[str, Path]]) -> list[list[tuple[str, Path]]]:
    """Small files in groups whose tar stays under BATCH_BYTES (each member adds a header)."""
    batches: list[list[tuple[str, Path]]] = [[]]
    size = 0
    for sha, local in files:
        cost = local.stat().st_size + 1024
        if batches[-1] and size + cost > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append((sha, local))
        size += cost
    return [batch for batch in batches if batch]


def download_files(
    workspace: Any, files: list[dict[str, Any]], target_path: str, *, overwrite: bool, show_progress: bool
) -> int:
    """Fetch datastore contents ({path, sha256, size}) by sha256 to `target_path/<path>`; how many."""
    fetched = 0
    for entry in files:
        target = target_inside(target_path, entry["path"])
        if os.path.exists(target) and not overwrite:
            continue
        download_checked(
            partial(workspace._store.open_data_blob, entry["sha256"]),
            target,
            size=entry["size"],
            sha256=entry["sha256"],
            label=entry["path"],
            show_progress=show_progress,
        )
        fetched += 1
    return fetched


def _remote_path(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


class DataReference(DataInput):
    """A file or folder of a datastore (`ds.path('fowl')`), mounted unless `as_download()`."""

    def __init__(
        self,
        datastore: Datastore,
        path_on_datastore: str = "",
        data_reference_name: str | None = None,
        mode: str = MOUNT,
    ):
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore or ""
        self.data_reference_name = data_reference_name
        self.mode = mode

    def _with_mode(self, mode: str) -> DataReference:
        return DataReference(self.datastore, self.path_on_datastore, self.data_reference_name, mode)

    def _description(self) -> dict[str, Any]:
        return {
            "kind": "datastore",
            "datastore": self.datastore.name,
            "path": self.path_on_datastore,
            "name": self.data_reference_name,
        }

    def __repr__(self) -> str:
        return f"DataReference({self.datastore.name!r}, {self.path_on_datastore!r}, mode={self.mode!r})"


class Datastore(DataInput):
    """A datastore of a workspace. Passed as an argument itself, it means its root, mounted."""

    def __init__(self, workspace: Any, name: str, _details: dict[str, Any] | None = None):
        self.workspace = workspace
        self.name = name
        self._details = _details if _details is not None else workspace._store.get_datastore(name)

    @staticmethod
    def get(workspace: Any, datastore_name: str) -> Datastore:
        return Datastore(workspace, datastore_name)

    @staticmethod
    def get_default(workspace: Any) -> Datastore:
        details = workspace._store.get_default_datastore()
        return Datastore(workspace, details["name"], _details=details)

    @staticmethod
    def register(workspace: Any, datastore_name: str) -> Datastore:
        """A new, empty datastore of the workspace (files live in TrainHub's own storage)."""
        details = workspace._store.create_datastore(datastore_name)
        return Datastore(workspace, details["name"], _details=details)

    @staticmethod
    def list(workspace: Any) -> dict[str, Datastore]:
        return {d["name"]: Datastore(workspace, d["name"], _details=d) for d in workspace._store.list_datastores()}

    @property
    def is_default(self) -> bool:
        return bool(self._details.get("is_default"))

    # ------------------------------------------------------------ handing data to runs

    def path(self, path: str | None = None, data_reference_name: str | None = None) -> DataReference:
        return DataReference(self, path or "", data_reference_name)

    def _with_mode(self, mode: str) -> DataReference:
        return DataReference(self, "", None, mode)

    def _description(self) -> dict[str, Any]:
        return DataReference(self)._description()

    # ------------------------------------------------------------ files

    def list_files(self, prefix: str = "") -> builtins.list[dict[str, Any]]:
        return self.workspace._store.list_datastore_files(self.name, prefix)

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """Download the datastore's files (those under `prefix`) into `target_path`, keeping their
        paths; each is checked against its sha256. A file already there is kept unless `overwrite`.
        Returns how many files were downloaded."""
        files = self.list_files(prefix or "")
        return download_files(self.workspace, files, str(target_path), overwrite=overwrite, show_progress=show_progress)

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload every regular file under `src_dir` to `target_path`. A file already there with
        the same content is skipped, one with other content is kept unless `overwrite`; an upload
        cut off resumes where it stopped when run again. Symlinks are never uploaded."""
        root = Path(src_dir)
        if not root.is_dir():
            raise exceptions.UserErrorException(f"src_dir {str(src_dir)!r} is not a folder.")
        files, links = [], []
        for folder, folders, names in os.walk(root):
            links += [Path(folder, name) for name in folders if Path(folder, name).is_symlink()]
            for name in sorted(names):
                local = Path(folder, name)
                if local.is_symlink() or not local.is_file():
                    links.append(local)
                else:
                    files.append((_remote_path(target_path or "", local.relative_to(root).as_posix()), local))
        if links:
            print(
                f"Not uploaded (symlinks and special files never are): {', '.join(map(str, links[:20]))}",
                file=sys.stderr,
            )
        self._upload(files, overwrite, show_progress)
        return self.path(target_path)

    def upload_files(
        self,
        files: builtins.list[str | os.PathLike[str]],
        relative_root: str | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload the given files to `target_path`, named relative to `relative_root` (default:
        by their file names alone)."""
        pairs = []
        for name in files:
            local = Path(name)
            if local.is_symlink() or not local.is_file():
                raise exceptions.UserErrorException(f"{str(name)!r} is not a regular file: nothing was uploaded.")
            relative = os.path.relpath(local, relative_root) if relative_root else local.name
            if relative.startswith(".."):
                raise exceptions.UserErrorException(f"{str(name)!r} is not inside relative_root {relative_root!r}.")
            pairs.append((_remote_path(target_path or "", Path(relative).as_posix()), local))
        self._upload(pairs, overwrite, show_progress)
        return self.path(target_path)

    def _upload(self, files: builtins.list[tuple[str, Path]], overwrite: bool, show_progress: bool) -> None:
        counts: dict[str, int] = {}
        taken: dict[str, set[str]] = {}
        for start in range(0, len(files), FILES_PER_REQUEST):
            batch = {
                remote: (local, self._sha256_sending(remote, local, overwrite, show_progress, taken))
                for remote, local in files[start : start + FILES_PER_REQUEST]
            }
            outcomes = self._put_files(batch, overwrite)
            missing = [remote for remote, outcome in outcomes.items() if outcome == "missing"]
            if missing:
                self._send_contents([batch[remote] for remote in missing], show_progress)
                outcomes.update(self._put_files({remote: batch[remote] for remote in missing}, overwrite))
            for outcome in outcomes.values():
                counts[outcome] = counts.get(outcome, 0) + 1
        if show_progress:
            print(
                f"Uploaded to datastore {self.name}: {counts.get('stored', 0)} stored, {counts.get('skipped', 0)} "
                f"skipped (same content already there), {counts.get('kept', 0)} kept (other content there; "
                "pass overwrite=True to replace)"
            )

    def _sha256_sending(
        self, remote: str, local: Path, overwrite: bool, show_progress: bool, taken: dict[str, set[str]]
    ) -> str:
        """The file's sha256. A file larger than one chunk that goes to a new path (or replaces one)
        is sent without hashing it, and the server names it; one whose path holds a file already is
        hashed first, since it is skipped or kept by its content; one this process hashed or sent
        before is not read again. `taken` keeps the paths of each folder listed so far."""
        known = known_sha256(local)
        if known is not None:
            return known
        identity = file_identity(local)
        if identity[2] <= CHUNK_BYTES:
            return _sha256_of(local)
        folder = remote.rpartition("/")[0]
        if folder not in taken and not overwrite:
            taken[folder] = {item["path"] for item in self.list_files(folder)}
        if overwrite or remote not in taken[folder]:
            bar = progress_bar(f"Uploading {remote}", show_progress)
            return self.workspace._store.upload_data_blob_keyed(local, on_progress=bar)["sha256"]
        sha256 = _sha256_of(local)
        remember_sha256(local, identity, sha256)
        return sha256

    def _put_files(self, batch: dict[str, tuple[Path, str]], overwrite: bool) -> dict[str, str]:
        answer = self.workspace._store.put_datastore_files(
            self.name, [{"path": remote, "sha256": sha} for remote, (_, sha) in batch.items()], overwrite
        )
        return {item["path"]: item["outcome"] for item in answer}

    def _send_contents(self, contents: builtins.list[tuple[Path, str]], show_progress: bool) -> None:
        """Upload each distinct content the server lacks, a few requests at a time: small files
        packed together in batches, large ones alone and resumably."""
        unique = dict((sha, local) for local, sha in contents)
        bar = None
        if show_progress:
            from tqdm import tqdm  # only where a bar is shown: the in-run SDK has no tqdm

            bar = tqdm(
                total=sum(p.stat().st_size for p in unique.values()),
                unit="B",
                unit_scale=True,
                desc=f"Uploading {len(unique)} files to {self.name}",
                leave=False,
            )
        small = [(sha, local) for sha, local in unique.items() if local.stat().st_size <= SMALL_FILE_BYTES]
        large = [(sha, local) for sha, local in unique.items() if local.stat().st_size > SMALL_FILE_BYTES]
        jobs = [partial(self._send_batch, batch, bar) for batch in _batches(small)]
        jobs += [partial(self._send_large, sha, local, bar) for sha, local in large]
        try:
            with ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:
                list(pool.map(lambda job: job(), jobs))
        finally:
            if bar is not None:
                bar.close()

    def _send_batch(self, batch: builtins.list[tuple[str, Path]], bar: Any) -> None:
        body = io.BytesIO()
        with tarfile.open(fileobj=body, mode="w") as archive:
            for sha, local in batch:
                archive.add(str(local), arcname=sha, recursive=False)
        self.workspace._store.post_data_blob_batch(body.getvalue())
        if bar is not None:
            bar.update(sum(local.stat().st_size for _, local in batch))

    def _send_large(self, sha: str, local: Path, bar: Any) -> None:
        sent = [0]

        def progress(received: int, size: int) -> None:
            if bar is not None:
                bar.update(received - sent[0])
            sent[0] = received

        self.workspace._store.upload_data_blob(sha, local, on_progress=progress)

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, workspace={self.workspace.name!r})"
