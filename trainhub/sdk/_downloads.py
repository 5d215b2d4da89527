"""Checked file downloads for the SDK: each file resumes from `<target>.part` with a Range request,
is checked against its sha256 and only then takes its name; targets never leave their folder."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no O_DIRECT either
    fcntl = None  # type: ignore[assignment]

from trainhub.sdk import exceptions


class TargetExistsError(exceptions.UserErrorException):
    """A file of the download is already in the target folder (and exist_ok is False)."""

    def __init__(self, path: str):
        super().__init__(f"{path} already exists: pass exist_ok=True to replace it.")
        self.path = path


class ChecksumMismatchError(exceptions.TrainHubError):
    """A downloaded file does not match the sha256 it was registered with."""


def target_inside(target_dir: str, relative: str) -> str:
    """Where `relative` (a server's '/'-separated path) lands under `target_dir`; refused when it
    would land elsewhere."""
    target = os.path.normpath(os.path.join(target_dir, *relative.split("/")))
    root, absolute = os.path.abspath(target_dir), os.path.abspath(target)
    if os.path.commonpath([root, absolute]) != root or absolute == root:
        raise exceptions.UserErrorException(f"The file path {relative!r} leads outside {target_dir!r}.")
    return target


# A download is received into a few page-aligned buffers in turn, and each is hashed by one thread
# and written by another while the next ones arrive: receiving (the socket's copy) and hashing each
# take about half a second of CPU per GiB, so on two cores neither waits for the other. Whole pages
# go past the page cache where the file system allows (O_DIRECT): filling the cache with a new 1 GiB
# file cost 0.2-1.9 s of CPU on the machines this was measured on, about as much as receiving and
# hashing it together.
BUFFER_BYTES = 4 << 20
BUFFERS = 4
PAGE = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _write_direct(fd: int, data: memoryview, offset: int) -> bool:
    """Whole pages from page-aligned memory at a page-aligned offset, past the page cache; False
    (nothing written) where the system or the file system does not allow it."""
    if not O_DIRECT or fcntl is None:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
    except OSError:
        return False
    try:
        _pwrite_all(fd, data, offset)
        return True
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return False
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    """`data` (page-aligned in memory) at `offset`: its whole pages direct, the rest buffered."""
    head = min(len(data), -offset % PAGE)
    end = head + (len(data) - head) // PAGE * PAGE
    if head == 0 and end and _write_direct(fd, data[:end], offset):
        _pwrite_all(fd, data[end:], offset + end)
    else:
        _pwrite_all(fd, data, offset)


def _fill(response: Any, view: memoryview) -> int:
    """Read into `view` until it is full or the body ends; how many bytes."""
    got = 0
    while got < len(view):
        count = response.raw.readinto(view[got:])
        if not count:
            break
        got += count
    return got


def _receive(response: Any, fd: int, offset: int, remaining: int, digest: Any, bar: Any) -> None:
    """Write the body at `offset` on, hashing it; a body of one buffer is hashed and written as it
    comes. A buffer is filled again once both its hash and its write are done."""
    count = BUFFERS if remaining > BUFFER_BYTES else 1
    views = [memoryview(mmap.mmap(-1, BUFFER_BYTES)) for _ in range(count)]
    busy: list[list[Future[Any]]] = [[] for _ in range(count)]
    with (
        ThreadPoolExecutor(1, thread_name_prefix="download-hash") as hasher,
        ThreadPoolExecutor(1, thread_name_prefix="download-write") as writer,
    ):
        turn = 0
        while True:
            for pending in busy[turn]:
                pending.result()
            # A resumed download first fills up to a page boundary, so later writes are whole pages.
            got = _fill(response, views[turn][: BUFFER_BYTES - offset % PAGE])
            if not got:
                break
            if count == 1:
                digest.update(views[turn][:got])
                _write_at(fd, views[turn][:got], offset)
            else:  # one thread each: the hash's updates and the writes go in order
                busy[turn] = [
                    hasher.submit(digest.update, views[turn][:got]),
                    writer.submit(_write_at, fd, views[turn][:got], offset),
                ]
            offset += got
            if bar is not None:
                bar.update(got)
            turn = (turn + 1) % count
        for futures in busy:
            for pending in futures:
                pending.result()


def download_checked(
    open_file: Callable[[dict[str, str]], Any],
    target: str,
    *,
    size: int,
    sha256: str,
    label: str,
    show_progress: bool = False,
) -> None:
    """Fetch one file to `target` through `open_file(headers)` (a store's streamed GET of it);
    `label` names it in the progress bar and in errors."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = target + ".part"
    digest = hashlib.sha256()
    offset = 0
    if os.path.exists(partial) and os.path.getsize(partial) < size:
        with open(partial, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                offset += len(chunk)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = open_file(headers)
    if offset and response.status_code != 206:
        digest, offset = hashlib.sha256(), 0  # the server sent the whole file again
    bar = None
    if show_progress:
        from tqdm import tqdm  # only where a bar is shown: the in-run SDK has no tqdm

        bar = tqdm(total=size, initial=offset, unit="B", unit_scale=True, desc=label, leave=False, file=sys.stderr)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC), 0o666)
        with response:
            try:
                _receive(response, fd, offset, size - offset, digest, bar)
            finally:
                os.close(fd)
    finally:
        if bar is not None:
            bar.close()
    announced = response.headers.get("X-Checksum-Sha256")
    if digest.hexdigest() != sha256 or (announced and announced != sha256):
        os.unlink(partial)
        raise ChecksumMismatchError(
            f"The download of {label} does not match its sha256 {sha256[:12]}…: it was damaged on the way; try again."
        )
    os.replace(partial, target)
