"""Packing a source directory into a snapshot: ignore files, limits, a deterministic .tar.gz."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pathspec

from trainhub.sdk.exceptions import SnapshotTooLargeError, UserErrorException

IGNORE_FILES = (".trainhubignore", ".amlignore")
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
DEFAULT_MAX_FILES = 2000


# A source folder of up to this many bytes is packed in memory: a submit whose snapshot the server
# has already (most of them) then writes and removes no file. A larger one is packed into a file.
IN_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass
class PackedSnapshot:
    sha256: str
    size: int
    file_count: int
    skipped_links: list[str]
    # config.json files holding an API token: a run reads its own token from its variables, and a
    # snapshot is readable by every member of the workspace (and by the run's code).
    skipped_tokens: list[str]
    # The packed bytes, until `path` first writes them to a file; or that file.
    packed: bytes | None = None
    file: Path | None = None

    @property
    def path(self) -> Path:
        """The snapshot as a .tar.gz file (written on first use when it was packed in memory)."""
        if self.file is None:
            with tempfile.NamedTemporaryFile(prefix="trainhub-snapshot-", suffix=".tar.gz", delete=False) as handle:
                handle.write(self.packed or b"")
            self.file, self.packed = Path(handle.name), None
        return self.file

    def discard(self) -> None:
        """Remove its file, if one was written."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)

    def left_out(self) -> list[str]:
        """What the user is told was not packed, and why."""
        said = [f"{name} (a symbolic link)" for name in self.skipped_links]
        said += [f"{name} (it holds an API token)" for name in self.skipped_tokens]
        return said

    def say_left_out(self) -> None:
        if self.left_out():
            print("Left out of the snapshot: " + ", ".join(self.left_out()) + ".", file=sys.stderr)


def ignore_spec(root: Path) -> pathspec.PathSpec:
    """.trainhubignore or .amlignore when present (they replace .gitignore), else .gitignore."""
    lines = [".git/"]
    for name in IGNORE_FILES:
        if (root / name).is_file():
            lines += (root / name).read_text(errors="replace").splitlines()
            break
    else:
        if (root / ".gitignore").is_file():
            lines += (root / ".gitignore").read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def holds_token(path: Path) -> bool:
    """A config.json as TrainHub's workspace page gives it with a token (the only secret a source
    folder usually holds by our own doing)."""
    if path.name != "config.json" or path.stat().st_size > 64 * 1024:
        return False
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("token"))


def list_source_files(root: Path) -> tuple[list[tuple[str, Path, int]], list[str], list[str]]:
    spec = ignore_spec(root)
    files: list[tuple[str, Path, int]] = []
    links: list[str] = []
    tokens: list[str] = []
    for folder, dirnames, filenames in os.walk(root):
        relative_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative_folder == "." else relative_folder + "/"
        kept = []
        for name in sorted(dirnames):
            relative = prefix + name
            if os.path.islink(os.path.join(folder, name)):
                links.append(relative)
            elif not spec.match_file(relative + "/"):
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            relative = prefix + name
            absolute = Path(folder) / name
            if spec.match_file(relative):
                continue
            if absolute.is_symlink():
                links.append(relative)
                continue
            if absolute.is_file():
                if holds_token(absolute):
                    tokens.append(relative)
                    continue
                files.append((relative, absolute, absolute.stat().st_size))
    files.sort()
    return files, links, sorted(tokens)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GB"


def pack_source_directory(
    source_directory: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> PackedSnapshot:
    root = Path(source_directory).expanduser().resolve()
    if not root.is_dir():
        raise UserErrorException(f"source_directory {str(source_directory)!r} is not a folder.")
    files, links, tokens = list_source_files(root)
    total = sum(size for _, _, size in files)
    if total > max_bytes or len(files) > max_files:
        largest = sorted(files, key=lambda f: -f[2])[:5]
        raise SnapshotTooLargeError(
            f"The snapshot of {root} would be {_human(total)} in {len(files)} files; the limit is "
            f"{_human(max_bytes)} and {max_files} files. Largest: "
            + ", ".join(f"{name} ({_human(size)})" for name, _, size in largest)
            + ". List what the run does not need in .trainhubignore (or .amlignore/.gitignore), "
            "and keep training data out of the source directory (use a datastore)."
        )
    in_memory = total <= IN_MEMORY_BYTES
    handle: IO[bytes] = (
        io.BytesIO()
        if in_memory
        else tempfile.NamedTemporaryFile(prefix="trainhub-snapshot-", suffix=".tar.gz", delete=False)
    )
    digest = hashlib.sha256()
    with handle:
        hashing = _HashingWriter(handle, digest)
        with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for relative, absolute, _ in files:
                    info = tarfile.TarInfo(relative)
                    info.size = absolute.stat().st_size
                    info.mtime = 0
                    info.mode = 0o755 if os.access(absolute, os.X_OK) else 0o644
                    with open(absolute, "rb") as content:
                        archive.addfile(info, content)
        packed = handle.getvalue() if isinstance(handle, io.BytesIO) else None
    found = (digest.hexdigest(), hashing.size, len(files), links, tokens)
    if packed is not None:
        return PackedSnapshot(*found, packed=packed)
    return PackedSnapshot(*found, file=Path(handle.name))


class _HashingWriter(io.RawIOBase):
    def __init__(self, target, digest):
        self.target = target
        self.digest = digest
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)
