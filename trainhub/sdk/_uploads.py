"""Resumable uploads (model files, snapshots, datastore files): the client side of trainhub/uploads.py.

Standard library only: a training script registering a model from inside a run uses it too.
A file goes up in chunks, each a PUT with `Content-Range: bytes START-END/TOTAL`, a few at once
(`UPLOAD_THREADS`; over plain HTTP the kernel sends each from the page cache: sendfile, no copy in
this process); a probe (`bytes */TOTAL`) first asks the server which byte ranges it holds, so an
upload cut off by a lost connection, a restarted server or a killed client resumes with only what
is missing, and a file the server has is not sent at all.
A chunk is a PUT of a byte range, so the transport sends it again after a timeout: the server
writes only bytes it does not hold, and a repeated last chunk finds the file committed and gets
the same answer. Nothing is stored twice, and no idempotency key is needed.

`upload_file_keyed` sends a file larger than one chunk without hashing it: the server computes
every file's sha256 anyway (it trusts no client) and names the file by it. The chunks go under an
upload key derived from the token and the local file (its path, inode, size, modification and
change times: an upload cut off resumes under the same key, a changed file gets another, and
nobody without the token can add chunks to it); once the server holds them all, and the file has
not changed since it was first read, a probe with `Upload-Commit` stores it and answers its sha256.
A file this process sent or hashed before, unchanged, is named by its sha256 at once, so the
server can say it has it before a byte is sent.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._transport import FileRange, Transport

CHUNK_BYTES = 8 * 1024 * 1024
# Chunks in flight at once: one body on its way (they go one after another, below) while the ones
# before it are written and hashed by the server. Three kept 1 GiB uploads as fast as four did,
# with the server holding four chunk buffers at most (trainhub/ops/request_limits.py keeps four):
# with four in flight it made a fifth and sixth of fresh memory for each upload.
UPLOAD_THREADS = 3
COMMIT_HEADER = "Upload-Commit"
CHANGED = "{path} changed while it was uploaded: nothing was stored; upload it again once it is written."

# What tells one state of a local file from another: (device, inode, size, modification time,
# change time), in nanoseconds. The change time moves with any write, and a tool that sets the
# modification time back cannot set it.
Identity = tuple[int, int, int, int, int]
# The sha256 of local files this process hashed or sent, by identity.
_KNOWN: dict[Identity, str] = {}


def _put(http: Transport, path: str, data: bytes | FileRange, content_range: str) -> tuple[int, dict[str, Any]]:
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
    with open(local, "rb") as handle:
        status, answer = _send_all(http, path, handle.fileno(), size, threads, on_progress)
    if status != 201:
        raise exceptions.TrainHubError(f"The server holds all of {local} but did not store it: {answer}")
    return answer


def _send_all(
    http: Transport,
    path: str,
    fd: int,
    size: int,
    threads: int,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[int, dict[str, Any]]:
    """Probe, then send what the server lacks until it stored the file (201) or holds all of it
    (200: an upload key's chunks wait for their commit)."""
    status, answer = _put(http, path, b"", f"bytes */{size}")
    if status != 201 and on_progress is not None:
        on_progress(sum(high - low for low, high in _held(answer)), size)
    whole = [[0, size]] if size else []
    while status != 201 and _held(answer) != whole:
        before = _held(answer)
        status, answer = _send_missing(http, path, fd, size, answer, threads, on_progress)
        if status != 201 and _held(answer) == before:
            raise exceptions.TrainHubError(f"The server keeps refusing chunks of {path}: {answer}")
    return status, answer


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

    # One body is sent after another, each once the one before it is in the socket, while the
    # requests overlap (each waits for its answer as the next goes): the server gets whole chunks
    # in the file's order, the first soonest, and hashes each while the next arrives. Bodies sent
    # all at once arrived together, 0.1 s into a 1 GiB upload, and none could be hashed before.
    def send(start: int, end: int, after: threading.Event, sent: threading.Event) -> tuple[int, dict[str, Any]]:
        try:
            after.wait()
            body = FileRange(fd, start, end - start, on_sent=sent.set)
            return _put(http, path, body, f"bytes {start}-{end - 1}/{size}")
        finally:
            sent.set()

    before = threading.Event()
    before.set()

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="upload") as pool:
        running: set[Future[tuple[int, dict[str, Any]]]] = set()
        while True:
            for start, end in pieces:
                sent = threading.Event()
                running.add(pool.submit(send, start, end, before, sent))
                before = sent
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


def identity_of(status: os.stat_result) -> Identity:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def file_identity(local: Path) -> Identity:
    return identity_of(local.stat())


def known_sha256(local: Path) -> str | None:
    """The sha256 of `local` when this process hashed or sent it before and it has not changed since."""
    return _KNOWN.get(file_identity(local))


def remember_sha256(local: Path, identity: Identity, sha256: str) -> None:
    """Record `sha256` for `local` as it was when reading it began, if it is still so."""
    if file_identity(local) == identity:
        _KNOWN[identity] = sha256


def upload_key(local: Path, identity: Identity, token: str | None) -> str:
    """The provisional name of `local`'s chunks: the same for the same unchanged file sent with the
    same token from this host, and one that nobody without the token can tell (so nobody else can
    send chunks under it for this client to take as its own)."""
    text = "\0".join(map(str, [token or "", socket.gethostname(), local.resolve(), *identity]))
    return "u" + hashlib.sha256(text.encode()).hexdigest()[:32]


def upload_file_keyed(
    http: Transport,
    folder: str,
    local: Path,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    threads: int = UPLOAD_THREADS,
) -> dict[str, Any]:
    """Send `local` to the upload endpoint `folder/<key>` without hashing it, and have the server
    store it under the sha256 it computes: the server's answer, with that `sha256`. A file that
    changed while it was read is refused before it is stored."""
    with open(local, "rb") as handle:
        identity = identity_of(os.fstat(handle.fileno()))
        if file_identity(local) != identity:
            raise exceptions.TrainHubError(CHANGED.format(path=local))
        size = identity[2]
        staged = f"{folder}/{upload_key(local, identity, http.token)}"
        status, answer = _send_all(http, staged, handle.fileno(), size, threads, on_progress)
        # Every byte was read by now: the file must be as it was before the first.
        if identity_of(os.fstat(handle.fileno())) != identity:
            raise exceptions.TrainHubError(CHANGED.format(path=local))
    response = http.request(
        "PUT",
        staged,
        data=b"",
        headers={"Content-Range": f"bytes */{size}", COMMIT_HEADER: "sha256"},
        timeout=(5, 600),
    )
    with response:
        status, answer = response.status_code, response.json()
    if status != 201:
        raise exceptions.TrainHubError(f"The server did not take {local} as a whole: {answer}")
    remember_sha256(local, identity, answer["sha256"])
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
