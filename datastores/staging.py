"""On a node: hand a run's inputs to its processes as local read-only paths.

Each node keeps a cache under TRAINHUB_DATA_CACHE_DIR/<node>: `blobs/` holds each content once
(by sha256, read-only) and `trees/<hash of the file list>/` lays an input's files out as hard links
to them. A tree is built under a file lock in a temporary folder and renamed into place, so the
ranks and runs of a node that need the same data share one copy, and a second run copies nothing.
The cache sits under the node work directory, which a container of the run sees too.

Past TRAINHUB_DATA_CACHE_MAX_BYTES (the blobs' total), staging a run evicts the least recently used
trees that no unfinished run needs and that were not used in the last EVICTION_GRACE_SECONDS, then
the blobs no tree links any more. A run's `download` copies are hard links in its own folder: they
keep their content when the cache lets go of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.template.defaultfilters import filesizeformat

from datastores.models import DataBlob, InputMode, RunInput
from runs.models import ACTIVE_STATUSES, Run

COPY_BYTES = 4 << 20
READ_ONLY_FILE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
READ_ONLY_DIR = READ_ONLY_FILE | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
EVICTION_GRACE_SECONDS = 600


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
            try:
                os.link(blob, destination)
            except FileNotFoundError:  # evicted between the check and the link: fetch it again
                blob, blob_copied = _cached_blob(root, workspace_pk, sha256)
                copied += blob_copied
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
    (root / "locks").mkdir(parents=True, exist_ok=True)
    # Under the tree's lock even when it exists: an eviction holds it while it removes the tree.
    with open(root / "locks" / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            os.utime(target)  # its last use, which eviction goes by
            return Staged(target, 0)
        return Staged(target, _build_tree(root, workspace_pk, files, target))


def _blobs(root: Path) -> dict[int, tuple[Path, int]]:
    """The node's cached contents by inode (a tree's files are hard links to them): path, size."""
    found = {}
    for blob in (root / "blobs").glob("??/*"):
        if ".partial-" not in blob.name:
            info = blob.stat()
            found[info.st_ino] = (blob, info.st_size)
    return found


def _trees_needed_by_unfinished_runs() -> set[str]:
    inputs = RunInput.objects.filter(run__status__in=ACTIVE_STATUSES)
    return {_tree_key(workspace_pk, files) for workspace_pk, files in inputs.values_list("run__workspace_id", "files")}


def _remove_tree(root: Path, tree: Path) -> set[int] | None:
    """Remove a tree unless it is being staged right now; the inodes of the files it held."""
    with open(root / "locks" / f"{tree.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        inodes: set[int] = set()
        for folder, _, names in os.walk(tree):
            os.chmod(folder, READ_ONLY_DIR | stat.S_IWUSR)
            inodes.update(os.lstat(os.path.join(folder, name)).st_ino for name in names)
        shutil.rmtree(tree)
    return inodes


def _drop_unlinked(blobs: list[Path], now: float) -> int:
    """Delete the blobs no tree or download copy links any more (one link left: their own)."""
    freed = 0
    for blob in blobs:
        try:
            info = blob.stat()
        except FileNotFoundError:
            continue
        if info.st_nlink == 1 and now - info.st_mtime >= EVICTION_GRACE_SECONDS:
            blob.unlink(missing_ok=True)
            freed += info.st_size
    return freed


def evict(node_name: str, max_bytes: int, say: Callable[[str], None]) -> int:
    """Shrink the node's cache to `max_bytes` of blobs (0: no limit), least recently used trees
    first; the bytes freed."""
    root = cache_root(node_name)
    blobs = _blobs(root) if max_bytes > 0 else {}
    total = sum(size for _, size in blobs.values())
    if total <= max_bytes:
        return 0
    now = time.time()
    freed = _drop_unlinked([path for path, _ in blobs.values()], now)  # left by earlier evictions or failed builds
    needed = _trees_needed_by_unfinished_runs()
    trees = sorted(
        (tree for tree in (root / "trees").glob("*") if tree.is_dir() and "." not in tree.name),
        key=lambda tree: tree.stat().st_mtime,
    )
    for tree in trees:
        if total - freed <= max_bytes:
            break
        if tree.name in needed or now - tree.stat().st_mtime < EVICTION_GRACE_SECONDS:
            continue
        inodes = _remove_tree(root, tree)
        if inodes is not None:
            freed += _drop_unlinked([blobs[inode][0] for inode in inodes if inode in blobs], now)
    if freed:
        say(f"Data cache: freed {filesizeformat(freed)} of least recently used inputs on this node.")
    if total - freed > max_bytes:
        say(
            f"Data cache: {filesizeformat(total - freed)} on this node is past its "
            f"{filesizeformat(max_bytes)} limit; the rest is needed by unfinished or recent runs."
        )
    return freed


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
    if variables:
        try:
            evict(node_name, settings.TRAINHUB_DATA_CACHE_MAX_BYTES, say)
        except OSError as error:  # a full cache must not fail the run that found it so
            say(f"Data cache: eviction stopped: {error}")
    return variables
