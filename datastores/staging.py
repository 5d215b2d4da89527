"""On a node: hand a run's inputs to its processes as local read-only paths.

Each node keeps a cache under TRAINHUB_DATA_CACHE_DIR/<node>: `blobs/` holds each content once
(by sha256, read-only) and `trees/<hash of the file list>/` lays an input's files out as hard links
to them. A tree is built under a file lock in a temporary folder and renamed into place, so the
ranks and runs of a node that need the same data share one copy, and a second run copies nothing.
The cache sits under the node work directory, which a container of the run sees too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.template.defaultfilters import filesizeformat

from datastores.models import DataBlob, InputMode, RunInput
from runs.models import Run

COPY_BYTES = 4 << 20
READ_ONLY_FILE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
READ_ONLY_DIR = READ_ONLY_FILE | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


class UnsafeInputPath(Exception):
    """A recorded file path that would land outside its input's folder."""


@dataclass(frozen=True)
class Staged:
    path: Path
    copied_bytes: int


def cache_root(node_name: str) -> Path:
    return (Path(settings.TRAINHUB_DATA_CACHE_DIR) / node_name).absolute()


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()) or target == root.resolve():
        raise UnsafeInputPath(f"The input file path {relative!r} leads outside its folder.")
    return target


def _cached_blob(root: Path, workspace_pk: int, sha256: str) -> tuple[Path, int]:
    """The node's copy of a content, copied from storage if missing; (path, bytes copied)."""
    path = root / "blobs" / sha256[:2] / sha256
    if path.exists():
        return path, 0
    blob = DataBlob.objects.get(workspace_id=workspace_pk, sha256=sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{sha256}.partial-{os.getpid()}")
    with default_storage.open(blob.storage_name, "rb") as source, open(partial, "wb") as target:
        shutil.copyfileobj(source, target, COPY_BYTES)
    os.chmod(partial, READ_ONLY_FILE)
    os.replace(partial, path)
    return path, blob.size


def _tree_key(workspace_pk: int, files: list[list]) -> str:
    listing = json.dumps([workspace_pk, sorted(files)], separators=(",", ":"))
    return hashlib.sha256(listing.encode()).hexdigest()


def _build_tree(root: Path, workspace_pk: int, files: list[list], target: Path) -> int:
    """Lay the files out in a temporary folder, make it read-only and rename it to `target`."""
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    copied = 0
    try:
        for relative, sha256, _size in files:
            destination = _inside(building, relative)
            blob, blob_copied = _cached_blob(root, workspace_pk, sha256)
            copied += blob_copied
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(blob, destination)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # a failed build leaves no half tree behind
        raise
    for folder, _, _ in os.walk(building, topdown=False):
        os.chmod(folder, READ_ONLY_DIR)
    os.replace(building, target)
    return copied


def stage_tree(node_name: str, workspace_pk: int, files: list[list]) -> Staged:
    """The node-local read-only folder holding `files` ([path, sha256, size]), built once."""
    root = cache_root(node_name)
    target = root / "trees" / _tree_key(workspace_pk, files)
    if target.is_dir():
        return Staged(target, 0)
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with open(root / "locks" / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return Staged(target, 0)  # built by another run of this node while this one waited
        return Staged(target, _build_tree(root, workspace_pk, files, target))


def _download(tree: Path, destination: Path) -> None:
    """A run's own copy of an input: hard links to the cached files (the same read-only content)."""
    shutil.copytree(tree, destination, copy_function=os.link)
    for folder, _, _ in os.walk(destination):
        os.chmod(folder, READ_ONLY_DIR | stat.S_IWUSR)


def stage_run_inputs(run: Run, node_name: str, workdir: Path, say: Callable[[str], None]) -> dict[str, str]:
    """Stage each input of the run on this node; the environment variables naming their paths,
    which the node expands in the run's arguments."""
    variables = {}
    for run_input in RunInput.objects.filter(run=run):
        staged = stage_tree(node_name, run.workspace_id, run_input.files)
        path = staged.path
        if run_input.mode == InputMode.DOWNLOAD:
            path = workdir / "inputs" / run_input.name
            _download(staged.path, path)
        if run_input.single_file:
            path = path / run_input.single_file
        say(
            f"Input {run_input.name} ({run_input.mode}): {len(run_input.files)} files, "
            f"{filesizeformat(run_input.size)}; {staged.copied_bytes} bytes copied to this node -> {path}"
        )
        variables[run_input.env_name] = str(path)
    return variables
