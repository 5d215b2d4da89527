"""Unpacking snapshots safely: regular files and folders inside the target, nothing else."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

UNSAFE_MEMBER = "The snapshot holds {kind} {name!r}, which is not allowed: {why}"
TOO_LARGE = "The snapshot expands to more than {limit} bytes."
TOO_MANY = "The snapshot holds more than {limit} files and folders."
DAMAGED = "The snapshot archive is damaged or truncated: {error}"
MAX_NAME = 4096


class UnsafeArchiveError(Exception):
    pass


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME:
        raise UnsafeArchiveError(
            UNSAFE_MEMBER.format(kind="a member", name=name[:80] + "…", why="its name is too long")
        )
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="member", name=name, why="bad characters in its name"))
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="absolute path", name=name, why="paths must be relative"))
    if ".." in path.parts:
        raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="path", name=name, why="it climbs out with '..'"))


def extract_snapshot(fileobj: IO[bytes], target: Path, *, max_bytes: int, max_files: int = 100_000) -> int:
    """Extract a .tar.gz into `target` (which must exist); returns the number of files."""
    target = target.resolve()
    total = 0
    count = 0
    entries = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            members = []
            for member in archive:
                _check_name(member.name)
                if not (member.isfile() or member.isdir()):
                    kind = (
                        "symlink"
                        if member.issym()
                        else "hardlink"
                        if member.islnk()
                        else "device or FIFO"
                        if (member.ischr() or member.isblk() or member.isfifo())
                        else "special member"
                    )
                    raise UnsafeArchiveError(
                        UNSAFE_MEMBER.format(
                            kind=kind, name=member.name, why="only regular files and folders may be in a snapshot"
                        )
                    )
                destination = (target / member.name).resolve()
                if destination != target and target not in destination.parents:
                    raise UnsafeArchiveError(
                        UNSAFE_MEMBER.format(kind="path", name=member.name, why="it lands outside the working folder")
                    )
                # Folders count too: millions of empty ones cost memory and inodes like files.
                entries += 1
                if entries > max_files:
                    raise UnsafeArchiveError(TOO_MANY.format(limit=max_files))
                if member.isfile():
                    total += member.size
                    count += 1
                    if total > max_bytes:
                        raise UnsafeArchiveError(TOO_LARGE.format(limit=max_bytes))
                members.append(member)
            for member in members:
                # The data filter re-checks every member and drops permissions bits we do not want.
                archive.extract(member, target, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UnsafeArchiveError(DAMAGED.format(error=error)) from None
    return count


def safe_join(root: Path, relative: str) -> Path:
    """`root/relative`, refusing anything that would land outside `root`."""
    _check_name(relative)
    path = (root / relative).resolve()
    root = root.resolve()
    if path != root and root not in path.parents:
        raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="path", name=relative, why="it lands outside its folder"))
    return path


def walk_regular_files(root: Path) -> list[tuple[str, Path, bool]]:
    """(relative path, absolute path, is_symlink) of everything under root, links not followed."""
    found = []
    if not root.is_dir() or root.is_symlink():
        return found
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(folder, d))]:
            absolute = Path(folder) / name
            relative = absolute.relative_to(root).as_posix()
            found.append((relative, absolute, absolute.is_symlink()))
    return found
