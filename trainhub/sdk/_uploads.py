"""Resumable uploads (model files, snapshots, datastore files): the client side of trainhub/uploads.py.

Standard library only: a training script registering a model from inside a run uses it too.
A file goes up in chunks, each a PUT with `Content-Range: bytes START-END/TOTAL`, a few at once
(`UPLOAD_THREADS`, each reading its own chunk); a probe (`bytes */TOTAL`) first asks the server
which byte ranges it holds, so an upload cut off by a lost connection, a restarted server or a
killed client resumes with only what is missing, and a file the server has is not sent at all.
A chunk is a PUT of a byte range, so the transport sends it again after a timeout: the server
writes only bytes it does not hold, and a repeated last chunk finds the file committed and gets
the same answer. Nothing is stored twice, and no idempotency key is needed.

`upload_file_hashing` sends a file larger than one chunk while it computes its sha256 (instead of
reading it once to hash it, then again to send it): its chunks go under an upload key derived from
the local file (its path, inode, size and modification time: an upload cut off resumes under the
same key, and a changed file gets another), and a probe of the sha256's URL naming the key commits
it. A file this process sent or hashed before, unchanged, is named by its sha256 at once, so the
server can say it has it before a byte is sent.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._transport import Transport

CHUNK_BYTES = 8 * 1024 * 1024
# Chunks in flight at once: enough to keep the client's reads, the network and the server's writes
# and hashing busy at the same time.
UPLOAD_THREADS = 4
KEY_HEADER = "Upload-Key"

# The sha256 of local files this process hashed, by (device, inode, size, modification time).
_KNOWN: dict[tuple[int, int, int, int], str] = {}


class _Buffers:
    """Chunk-sized buffers used again and again: a chunk read into fresh memory costs a page fault
    per 4 KB, more than the copy itself. A buffer goes back once its chunk was sent."""

    def __init__(self, count: int, size: int):
        self.size = size
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count):
            self.free.put(bytearray(size))

    def take(self) -> bytearray:
        return self.free.get()

    def give(self, buffer: bytearray) -> None:
        self.free.put(buffer)


def _read_into(buffer: bytearray, fd: int, start: int, length: int) -> memoryview:
    """Bytes [start, start + length) of the file (fewer where it ends sooner), in `buffer`."""
    view = memoryview(buffer)[:length]
    got = 0
    while got < length:
        count = os.preadv(fd, [view[got:]], start + got)
        if count == 0:
            break
        got += count
    return view[:got]


def _put(http: Transport, path: str, data: bytes | memoryview, content_range: str) -> tuple[int, dict[str, Any]]:
    response = http.request(
        "PUT",
        path,
        data=data,
        headers={"Content-Type": "application/octet-stream", "Content-Range": content_range},
        timeout=(5, 600),
    )
    with response:
        return response.status_code, response.json()


def _held(answer: dict[str, Any]) -> list[list[int]]:
    """The ranges [start, end) the server holds (a server without the list: its prefix)."""
    if "held" in answer:
        return answer["held"]
    return [[0, answer["received"]]] if answer["received"] else []


def _missing(held: list[list[int]], size: int, chunk: int) -> Iterator[tuple[int, int]]:
    """The chunks [start, end) to send: the gaps between held ranges, cut where multiples of the
    chunk size fall (where the server lets a chunk start, besides the end of a held range)."""
    position = 0
    for low, high in [*held, [size, size]]:
        while position < low:
            end = min(low, (position // chunk + 1) * chunk)
            yield position, end
            position = end
        position = max(position, high)


def upload_file(
    http: Transport,
    path: str,
    local: Path,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    threads: int = UPLOAD_THREADS,
) -> dict[str, Any]:
    """Send `local` to the upload endpoint `path`, all but the ranges the server holds; the server's
    answer for the finished file. `on_progress(received, size)` is called with what the server held
    before the first chunk is sent, then as chunks are stored; an exception it raises stops the
    upload (chunks already on their way are still stored)."""
    size = local.stat().st_size
    status, answer = _put(http, path, b"", f"bytes */{size}")
    if status == 201:
        return answer
    stored = sum(high - low for low, high in _held(answer))
    if on_progress is not None:
        on_progress(stored, size)
    with open(local, "rb") as handle:
        while True:
            before = _held(answer)
            status, answer = _send_missing(http, path, handle.fileno(), size, answer, threads, on_progress)
            if status == 201:
                return answer
            if _held(answer) == before:
                raise exceptions.TrainHubError(f"The server keeps refusing chunks of {local}: {answer}")


def _send_missing(
    http: Transport,
    path: str,
    fd: int,
    size: int,
    progress: dict[str, Any],
    threads: int,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[int, dict[str, Any]]:
    """Send the chunks the server lacks by `progress`, `threads` at a time; the answer that
    finished the file (201), else what the server holds after them (200)."""
    chunk = progress.get("chunk_bytes") or CHUNK_BYTES
    pieces = _missing(_held(progress), size, chunk)
    stored = sum(high - low for low, high in _held(progress))
    latest = (200, progress)
    buffers = _Buffers(max(1, threads), chunk)

    def send(start: int, end: int) -> tuple[int, dict[str, Any]]:
        buffer = buffers.take()
        try:
            data = _read_into(buffer, fd, start, end - start)
            return _put(http, path, data, f"bytes {start}-{start + len(data) - 1}/{size}")
        finally:
            buffers.give(buffer)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="upload") as pool:
        running: set[Future[tuple[int, dict[str, Any]]]] = set()
        while True:
            for start, end in pieces:
                running.add(pool.submit(send, start, end))
                if len(running) >= max(1, threads):
                    break
            if not running:
                return latest
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                status, answer = future.result()
                if status == 201:
                    latest = (status, answer)
                elif latest[0] != 201 and sum(high - low for low, high in _held(answer)) >= stored:
                    stored = sum(high - low for low, high in _held(answer))
                    latest = (status, answer)
            if on_progress is not None:
                on_progress(size if latest[0] == 201 else stored, size)


def _identity(local: Path) -> tuple[int, int, int, int]:
    status = local.stat()
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def known_sha256(local: Path) -> str | None:
    """The sha256 of `local` when this process hashed it before and it has not changed since."""
    return _KNOWN.get(_identity(local))


def remember_sha256(local: Path, identity: tuple[int, int, int, int], sha256: str) -> None:
    """Record `sha256` for `local` as it was when hashing began, if it is still so."""
    if _identity(local) == identity:
        _KNOWN[identity] = sha256


def upload_key(local: Path) -> str:
    """The provisional name of `local`'s chunks: the same for the same unchanged file on this host."""
    device, inode, size, modified = _identity(local)
    text = f"{socket.gethostname()}\0{local.resolve()}\0{device}\0{inode}\0{size}\0{modified}"
    return "u" + hashlib.sha256(text.encode()).hexdigest()[:32]


def upload_file_hashing(
    http: Transport,
    folder: str,
    local: Path,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    threads: int = UPLOAD_THREADS,
) -> dict[str, Any]:
    """Send `local` to the upload endpoint `folder/<name>` as it is hashed: read once, in order,
    each chunk hashed and then sent (`threads` at a time) unless the server holds it; the server's
    answer for the stored file, with its `sha256`."""
    identity = _identity(local)
    size = identity[2]
    key = upload_key(local)
    staged = f"{folder}/{key}"
    _, answer = _put(http, staged, b"", f"bytes */{size}")
    chunk = answer.get("chunk_bytes") or CHUNK_BYTES
    held = _held(answer)
    stored = sum(high - low for low, high in held)
    if on_progress is not None:
        on_progress(stored, size)
    digest = hashlib.sha256()
    # One buffer more than chunks in flight: the next chunk is read and hashed while they go.
    buffers = _Buffers(max(1, threads) + 1, chunk)
    with open(local, "rb") as handle, ThreadPoolExecutor(max(1, threads), thread_name_prefix="upload") as pool:
        running: set[Future[list[tuple[int, dict[str, Any]]]]] = set()

        def collect(first: bool) -> None:
            nonlocal running, stored
            done, running = wait(running, return_when=FIRST_COMPLETED if first else ALL_COMPLETED)
            for future in done:
                for _, reply in future.result():
                    stored = max(stored, sum(high - low for low, high in _held(reply)))
            if on_progress is not None:
                on_progress(stored, size)

        def send(data: memoryview, start: int, ranges: list[tuple[int, int]]) -> list[tuple[int, dict[str, Any]]]:
            return [
                _put(http, staged, data[low - start : high - start], f"bytes {low}-{high - 1}/{size}")
                for low, high in ranges
            ]

        for start in range(0, size, chunk):
            buffer = buffers.take()
            data = _read_into(buffer, handle.fileno(), start, min(chunk, size - start))
            digest.update(data)
            ranges = [(low, high) for low, high in _missing(held, start + len(data), chunk) if low >= start]
            if not ranges:
                buffers.give(buffer)
                continue
            if len(running) >= max(1, threads):
                collect(first=True)
            future = pool.submit(send, data, start, ranges)
            future.add_done_callback(lambda _, buffer=buffer: buffers.give(buffer))  # type: ignore[misc]
            running.add(future)
        if running:
            collect(first=False)
        sha256 = digest.hexdigest()
        while True:
            _, answer = _put(http, staged, b"", f"bytes */{size}")
            if _held(answer) == [[0, size]]:
                break
            before = _held(answer)
            _, answer = _send_missing(http, staged, handle.fileno(), size, answer, threads, on_progress)
            if _held(answer) == before:
                raise exceptions.TrainHubError(f"The server keeps refusing chunks of {local}: {answer}")
    response = http.request(
        "PUT",
        f"{folder}/{sha256}",
        data=b"",
        headers={"Content-Range": f"bytes */{size}", KEY_HEADER: key},
        timeout=(5, 600),
    )
    with response:
        status, answer = response.status_code, response.json()
    if status != 201:
        raise exceptions.TrainHubError(f"The server did not take {local} as a whole: {answer}")
    remember_sha256(local, identity, sha256)
    if on_progress is not None:
        on_progress(size, size)
    return answer


def progress_bar(description: str, show: bool) -> Any:
    """An `on_progress` that moves a tqdm bar (None when not shown)."""
    if not show:
        return None
    from tqdm import tqdm  # only where a bar is shown: the in-run SDK has no tqdm

    bars: list[Any] = []

    def update(received: int, size: int) -> None:
        if not bars:  # made at the first chunk: nothing shows when the server had the file
            bars.append(tqdm(total=size, initial=received, unit="B", unit_scale=True, desc=description, leave=False))
        bars[0].update(received - bars[0].n)
        if received >= size:
            bars[0].close()

    return update
