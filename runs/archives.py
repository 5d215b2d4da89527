"""Unpacking snapshots safely: regular files and folders inside the target, nothing else.

A snapshot is a .tar.gz (what the SDK and the CLI send) or a .zip (sent through the API by other
tools); it is told apart by its first bytes, whatever its name or the upload's content type.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import IO, Any

UNSAFE_MEMBER = "The snapshot holds {kind} {name!r}, which is not allowed: {why}"
TOO_LARGE = "The snapshot expands to more than {limit} bytes."
TOO_MANY = "The snapshot holds more than {limit} files and folders."
DAMAGED = "The snapshot archive is damaged or truncated: {error}"
MAX_NAME = 4096
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; the end record of an empty zip
ZIP_ENCRYPTED = 0x1
ZIP_UNIX = 3
COPY_BYTES = 1 << 20
MAX_ENTRIES = 100_000


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


def is_zip(fileobj: IO[bytes]) -> bool:
    """Whether a (seekable) snapshot is a zip, from its first bytes; the position is kept."""
    start = fileobj.tell()
    head = fileobj.read(4)
    fileobj.seek(start)
    return head in ZIP_MAGIC


def snapshot_suffix(fileobj: IO[bytes]) -> str:
    return ".zip" if is_zip(fileobj) else ".tar.gz"


def _zip_entries(fileobj: IO[bytes]) -> int:
    """How many members a zip's end record declares. ZipFile reads the whole central directory
    into memory as it opens: a zip of millions of empty members is refused before that."""
    # The end record (zip64 aware): zipfile has no public reader of it, and typeshed leaves out
    # zipfile's private names.
    end = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    return int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def list_snapshot(fileobj: IO[bytes], limit: int) -> list[list[Any]]:
    """[name, size] of the first files of a snapshot (at most `limit` entries read), for the run
    page; a damaged archive lists as empty (the node refuses it when it unpacks it)."""
    try:
        if is_zip(fileobj):
            if _zip_entries(fileobj) > MAX_ENTRIES:
                return []
            with zipfile.ZipFile(fileobj) as archive:
                return [[i.filename, i.file_size] for i in islice(archive.infolist(), limit) if not i.is_dir()]
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            return [[m.name, m.size] for m in islice(archive, limit) if m.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        return []


def extract_snapshot(fileobj: IO[bytes], target: Path, *, max_bytes: int, max_files: int = MAX_ENTRIES) -> int:
    """Extract a .tar.gz or a .zip into `target` (which must exist); returns the number of files."""
    if is_zip(fileobj):
        return _extract_zip(fileobj, target, max_bytes=max_bytes, max_files=max_files)
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


def _zip_member_kind(info: zipfile.ZipInfo) -> str:
    """What a zip member is, from the Unix mode in its external attributes (zips made on Unix keep
    symlinks as members whose data is the link's target): "file", "folder", or what it is instead."""
    mode = info.external_attr >> 16 if info.create_system == ZIP_UNIX else 0
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "symlink"
    if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return "device or FIFO"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special member"
    return "folder" if info.is_dir() or kind == stat.S_IFDIR else "file"


def _checked_zip_members(
    archive: zipfile.ZipFile, target: Path, *, max_bytes: int, max_files: int
) -> list[tuple[zipfile.ZipInfo, Path, bool]]:
    """(member, destination, is a folder) of every member, all checked before anything is written."""
    checked = []
    names: set[Path] = set()
    total = 0
    for info in archive.infolist():
        name = info.filename
        _check_name(name)
        kind = _zip_member_kind(info)
        if kind not in ("file", "folder"):
            why = "only regular files and folders may be in a snapshot"
            raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind=kind, name=name, why=why))
        if info.flag_bits & ZIP_ENCRYPTED:
            raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="encrypted member", name=name, why="it cannot be read"))
        destination = (target / name).resolve()
        if destination == target and kind == "folder":
            continue  # "./"
        if target not in destination.parents:
            raise UnsafeArchiveError(
                UNSAFE_MEMBER.format(kind="path", name=name, why="it lands outside the working folder")
            )
        if destination in names:
            raise UnsafeArchiveError(UNSAFE_MEMBER.format(kind="member", name=name, why="it appears twice"))
        names.add(destination)
        if len(names) > max_files:
            raise UnsafeArchiveError(TOO_MANY.format(limit=max_files))
        if kind == "file":
            # The sizes a zip declares are checked here and again while writing: a member can lie.
            total += info.file_size
            if total > max_bytes:
                raise UnsafeArchiveError(TOO_LARGE.format(limit=max_bytes))
        checked.append((info, destination, kind == "folder"))
    return checked


def _extract_zip(fileobj: IO[bytes], target: Path, *, max_bytes: int, max_files: int) -> int:
    target = target.resolve()
    before = set(target.iterdir())
    try:
        if _zip_entries(fileobj) > max_files:
            raise UnsafeArchiveError(TOO_MANY.format(limit=max_files))
        with zipfile.ZipFile(fileobj) as archive:
            members = _checked_zip_members(archive, target, max_bytes=max_bytes, max_files=max_files)
            written = 0
            for info, destination, is_folder in members:
                if is_folder:
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "xb") as output:
                    while chunk := source.read(COPY_BYTES):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UnsafeArchiveError(TOO_LARGE.format(limit=max_bytes))
                        output.write(chunk)
    except UnsafeArchiveError:
        _remove_new(target, before)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as error:
        _remove_new(target, before)
        raise UnsafeArchiveError(DAMAGED.format(error=error)) from None
    return sum(1 for _, _, is_folder in members if not is_folder)


def _remove_new(target: Path, before: set[Path]) -> None:
    """Undo a refused extraction: nothing of a refused archive stays in the working folder."""
    for child in set(target.iterdir()) - before:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def walk_regular_files(root: Path) -> list[tuple[str, Path, bool]]:
    """(relative path, absolute path, is_symlink) of everything under root, links not followed."""
    found: list[tuple[str, Path, bool]] = []
    if not root.is_dir() or root.is_symlink():
        return found
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(folder, d))]:
            absolute = Path(folder) / name
            relative = absolute.relative_to(root).as_posix()
            found.append((relative, absolute, absolute.is_symlink()))
    return found
