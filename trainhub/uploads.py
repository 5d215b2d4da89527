"""Resumable uploads written once: the one way a file enters TrainHub over HTTP (model files,
run snapshots, datastore files).

A client sends a file in chunks, each a `PUT` with `Content-Range: bytes START-END/TOTAL` (a probe,
`bytes */TOTAL` with no body, asks how much arrived). Each chunk is small enough to stay in memory
in daphne and Django, and is written at its place in one staging file per (workspace, kind, sha256,
size); a list of the byte ranges held sits beside it. Chunks may come in any order and several at
once (the SDK sends a few in parallel): a chunk starts at a multiple of the chunk size or where a
held range ends, so the list stays short, and bytes already held are not written again. The sha256
is computed as the held prefix grows, in a thread of its own, from the bytes this process writes,
while it writes them (a chunk that arrives ahead of the one before it waits in memory), never from
bytes of a chunk over a range held already; a chunk is answered once the chunks in front of it are
hashed, so that its own bytes are hashed while the client sends the next. Whole pages are written
past the page cache (see `_write_at`). When the last byte arrives the file is checked against its
sha256 and handed to the caller's `commit`, which saves it through the storage API: a `StagedFile`
is moved into a FileSystemStorage by a rename, and read into any other storage by a normal save. So
a body is written to disk once. A connection cut midway loses nothing: the next attempt sends only
the ranges the server does not hold. Staging files nobody finished are deleted after
`TRAINHUB_UPLOAD_STALE_SECONDS`, when the next upload starts.

A client need not hash a large file at all: the server computes every file's sha256 anyway. It
sends the chunks to a provisional name instead, an upload key (`u` and 32 hex digits, which the SDK
derives from its token and the local file, so that a cut-off upload resumes under the same key and
nobody else can add to it), and, once the server holds all of it, commits it with a probe of the
key's URL that carries an `Upload-Commit` header: the server stores it under the sha256 it computed
and answers with it (the same answer to a commit sent again). A client that knows the sha256 may
instead probe that sha256's URL with the key in an `Upload-Key` header: the staged file is then
checked against it. Either way a file the server already has is not stored again (the staged copy
is deleted).

An app receiving uploads declares a `Kind` and one endpoint (registry and runs are examples):

    THING_UPLOADS = uploads.Kind(name="things", limit=lambda: settings.THING_MAX_BYTES)

    @router.put("/{workspace_name}/things/{sha256}", response={200: uploads.ProgressOut, 201: ThingOut})
    def put_thing(request, workspace_name, sha256):
        member = access(request, workspace_name)
        member.require(Action.WRITE)
        outcome = uploads.receive(
            workspace=member.workspace, kind=THING_UPLOADS, sha256=sha256,
            chunk=uploads.chunk_from_request(request, THING_UPLOADS),
            existing=lambda sha256: Thing.objects.filter(workspace=member.workspace, sha256=sha256).first(),
            commit=lambda sha256, staged: Thing.objects.create(..., name=default_storage.save(name, staged)),
        )
        if isinstance(outcome, uploads.Progress):
            return Status(200, outcome.out())
        return Status(201, ThingOut.from_orm(outcome))

(the `receive` call belongs in the app's services.py), and the SDK side is `trainhub.sdk._uploads.upload_file`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import json
import mmap
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import HttpRequest
from ninja import Schema, Status

from trainhub.workspaces.permissions import Action

T = TypeVar("T")
B = TypeVar("B", bound=Model)

SHA_PATTERN = re.compile(r"^[0-9a-f]{64}$")
KEY_PATTERN = re.compile(r"^u[0-9a-f]{32}$")
KEY_HEADER = "Upload-Key"
COMMIT_HEADER = "Upload-Commit"
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
RANGE_PATTERN = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+)$")
COPY_BYTES = 1 << 20

BAD_SHA = "A file is named by the 64 hex digits of its sha256."
BAD_KEY = (
    "Upload-Key names the chunks sent under a provisional name ('u' and 32 hex digits), and goes with a "
    "probe of the file's sha256 URL (Content-Range 'bytes */TOTAL')."
)
BAD_COMMIT = (
    "Upload-Commit stores the file sent under an upload key ('u' and 32 hex digits) as the sha256 the server "
    "computes: it goes with a probe of the key's URL (Content-Range 'bytes */TOTAL')."
)
BAD_RANGE = "Content-Range must be 'bytes START-END/TOTAL' (or 'bytes */TOTAL' to ask how much arrived)."
TOO_LARGE = "The file is {size} bytes; the limit is {limit} bytes."
CHUNK_TOO_LARGE = (
    "A request carries at most {limit} bytes of a file: send it in chunks with "
    "Content-Range 'bytes START-END/TOTAL' (the TrainHub SDK does)."
)
CHUNK_LENGTH_MISMATCH = "The chunk's body is not the {declared} bytes its Content-Range announced."
HASH_MISMATCH = "The uploaded file does not match its sha256: the upload was damaged; send it again."


@dataclass(frozen=True)
class Kind:
    """What an app receives: its folder in the staging area, its size limit (read per request, so
    a changed setting applies at once) and how it says a file is too large ({size}, {limit})."""

    name: str
    limit: Callable[[], int]
    too_large: str = TOO_LARGE


class Readable(Protocol):
    """What an upload's bytes are read from: a request's body, a file, a member of an archive."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class Chunk:
    """One request of an upload: bytes [start, end] of `total`, or a probe (start is None)."""

    start: int | None
    end: int | None
    total: int
    body: Readable
    # A probe that takes the file sent under this upload key as the one its URL names.
    staged_as: str | None = None
    # A probe of an upload key's URL that stores what was sent under it as the sha256 it has.
    commit: bool = False

    @property
    def length(self) -> int:
        return 0 if self.start is None or self.end is None else self.end - self.start + 1


class ProgressOut(Schema):
    received: int
    size: int
    chunk_bytes: int
    held: list[list[int]] = []


def _held_prefix(held: list[list[int]]) -> int:
    """Where the first held range ends, when it starts at 0 (else 0): the bytes held from the start."""
    return held[0][1] if held and held[0][0] == 0 else 0


@dataclass(frozen=True)
class Progress:
    """An unfinished upload: the byte ranges [start, end) of `size` the server holds; `received`
    is where the first of them (from 0) ends."""

    held: list[list[int]]
    size: int

    @property
    def received(self) -> int:
        return _held_prefix(self.held)

    def out(self) -> ProgressOut:
        return ProgressOut(received=self.received, size=self.size, chunk_bytes=chunk_bytes(), held=self.held)


class StagedFile(File):
    """A finished, checked upload. FileSystemStorage moves a file that names its temporary path
    (the way Django stores large form uploads), so saving it into storage is a rename."""

    def __init__(self, path: Path):
        super().__init__(open(path, "rb"), name=path.name)
        self.path = path

    def temporary_file_path(self) -> str:
        return str(self.path)


def chunk_bytes() -> int:
    return settings.TRAINHUB_UPLOAD_CHUNK_BYTES


def chunk_from_request(request: HttpRequest, kind: Kind) -> Chunk:
    """The chunk a request carries: its Content-Range, or without one the whole file at once."""
    header = request.headers.get("Content-Range", "").strip()
    if not header:
        return _whole_body(request, kind)
    match = RANGE_PATTERN.match(header)
    if match is None:
        raise ValidationError(BAD_RANGE, code="upload_range")
    total = int(match.group(3))
    key = request.headers.get(KEY_HEADER)
    commit = request.headers.get(COMMIT_HEADER) is not None
    if match.group(1) is None:
        if key is not None and (commit or not KEY_PATTERN.match(key)):
            raise ValidationError(BAD_KEY, code="upload_key")
        return Chunk(start=None, end=None, total=total, body=request, staged_as=key, commit=commit)
    if key is not None:
        raise ValidationError(BAD_KEY, code="upload_key")
    if commit:
        raise ValidationError(BAD_COMMIT, code="upload_commit")
    start, end = int(match.group(1)), int(match.group(2))
    if start > end or end >= total:
        raise ValidationError(BAD_RANGE, code="upload_range")
    return Chunk(start=start, end=end, total=total, body=request)


def put_answer(
    request: HttpRequest,
    access: Any,
    sha256: str,
    *,
    kind: Kind,
    receive: Callable[..., Any],
    out: Callable[..., Schema],
) -> Status[Any]:
    """The PUT endpoint of one kind of upload: a writer's chunk goes to `receive`; the answer is
    200 with the progress while the file is incomplete, 201 with `out` once it is stored."""
    access.require(Action.WRITE)
    outcome = receive(access=access, sha256=sha256, chunk=chunk_from_request(request, kind))
    if isinstance(outcome, Progress):
        return Status(200, outcome.out())
    return Status(201, out(sha256=outcome.sha256, size=outcome.size))


def _whole_body(request: HttpRequest, kind: Kind) -> Chunk:
    """A file sent whole in one request (a small file, a plain client). Without a Content-Length
    (chunked transfer encoding) it is read, up to one chunk more than allowed, to learn its size."""
    declared = request.headers.get("Content-Length", "")
    body: Readable = request
    if declared.isdigit():
        size = int(declared)
    else:
        allowed = min(kind.limit(), chunk_bytes())
        data = request.read(allowed + 1)
        if len(data) > allowed:
            if allowed == kind.limit():
                raise _too_large(kind, f"more than {allowed}")
            raise ValidationError(CHUNK_TOO_LARGE.format(limit=chunk_bytes()), code="upload_chunk_too_large")
        size, body = len(data), io.BytesIO(data)
    return Chunk(start=0 if size else None, end=size - 1 if size else None, total=size, body=body)


def _check_sha(sha256: str) -> None:
    if not SHA_PATTERN.match(sha256):
        raise ValidationError(BAD_SHA, code="upload_sha")


def _too_large(kind: Kind, size: int | str) -> ValidationError:
    return ValidationError(kind.too_large.format(size=size, limit=kind.limit()), code="upload_too_large")


def _check(kind: Kind, sha256: str, chunk: Chunk) -> None:
    """Refuse a chunk before storing a byte of it."""
    if KEY_PATTERN.match(sha256):
        if chunk.staged_as is not None:
            raise ValidationError(BAD_KEY, code="upload_key")
    elif chunk.commit:
        raise ValidationError(BAD_COMMIT, code="upload_commit")
    else:
        _check_sha(sha256)
    if chunk.total > kind.limit():
        raise _too_large(kind, chunk.total)
    if chunk.length > chunk_bytes():
        raise ValidationError(CHUNK_TOO_LARGE.format(limit=chunk_bytes()), code="upload_chunk_too_large")


def upload_root() -> Path:
    return Path(settings.TRAINHUB_UPLOAD_DIR).resolve()


def staging_path(workspace_pk: int, kind: Kind, name: str) -> Path:
    """Where an upload is staged; `name` comes from a checked sha256, and still must stay inside."""
    if not KIND_PATTERN.match(kind.name):
        raise ValueError(f"Upload kind {kind.name!r} is not a short lowercase name.")
    root = upload_root()
    path = (root / str(int(workspace_pk)) / kind.name / name).resolve()
    if not path.is_relative_to(root) or path.parent.parent.parent != root:
        raise ValidationError(BAD_SHA, code="upload_sha")
    return path


@contextmanager
def _locked(path: Path) -> Iterator[IO[bytes] | None]:
    """The staging file opened for writing anywhere in it under an exclusive lock, or None when it
    was finished (moved into storage or deleted) while this request waited for the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        yield handle if same else None
    finally:
        handle.close()


def _held_path(path: Path) -> Path:
    return path.with_name(path.name + ".held")


def _read_held(path: Path, handle: IO[bytes]) -> list[list[int]]:
    """The ranges [start, end) the staging file holds (a file from before the list: its bytes; a
    list left from a staging file that is gone: nothing)."""
    size = os.fstat(handle.fileno()).st_size
    try:
        held = json.loads(_held_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return [[0, size]] if size else []
    return held if not held or held[-1][1] <= size else []


def _write_held(path: Path, held: list[list[int]]) -> None:
    """Replaced whole, after the bytes it lists were written: a crash leaves a list that claims
    nothing the file lacks."""
    temporary = path.with_name(path.name + ".held-new")
    temporary.write_text(json.dumps(held))
    os.replace(temporary, _held_path(path))


def _reserve(path: Path, handle: IO[bytes], size: int) -> None:
    """Allocate a new staging file's blocks at once: filled a chunk at a time, ext4 spent several
    times the CPU of the writes themselves finding blocks for 1 GB. The (empty) list of held
    ranges is written first, so that a file at full size is never taken for a complete one."""
    if os.fstat(handle.fileno()).st_size == 0 and size > chunk_bytes():
        _write_held(path, [])
        os.posix_fallocate(handle.fileno(), 0, size)


def _with_range(held: list[list[int]], start: int, end: int) -> list[list[int]]:
    merged: list[list[int]] = []
    for low, high in sorted([*held, [start, end]]):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


def _missing(held: list[list[int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that `held` does not cover."""
    parts, position = [], start
    for low, high in held:
        if high <= position or low >= end:
            continue
        if low > position:
            parts.append((position, low))
        position = max(position, high)
    if position < end:
        parts.append((position, end))
    return parts


# Bytes are hashed from a small buffer they are copied into first, a few at a time: on these
# machines sha256 took 0.93 s of CPU per GiB of memory written a while before (an upload chunk's,
# written by another thread), 0.75 s copied first into a buffer that stays in the core's cache
# (the copy included). The buffers are kept: fresh memory costs more than the copy.
HASHED_FROM_BYTES = 1024 * 1024
_HASHING_BUFFERS: list[memoryview] = []
_HASHING_BUFFERS_LOCK = threading.Lock()


@contextmanager
def _reused(pool: list[T], lock: threading.Lock, make: Callable[[], T]) -> Iterator[T]:
    """A buffer from `pool` (made when none is free), put back once used: fresh memory costs a
    page fault per 4 KB; one user at a time has it."""
    with lock:
        buffer = pool.pop() if pool else make()
    try:
        yield buffer
    finally:
        with lock:
            pool.append(buffer)


def _hashing_buffer() -> AbstractContextManager[memoryview]:
    return _reused(_HASHING_BUFFERS, _HASHING_BUFFERS_LOCK, lambda: memoryview(bytearray(HASHED_FROM_BYTES)))


def _hash_near(digest: Any, data: memoryview, near: memoryview) -> None:
    """Feed `data` to `digest` through the buffer `near` (as it is when it is in `near`)."""
    if data.obj is near.obj:
        digest.update(data)
        return
    for start in range(0, len(data), len(near)):
        piece = data[start : start + len(near)]
        near[: len(piece)] = piece
        digest.update(near[: len(piece)])


class _RunningDigest:
    """The sha256 of a staging file's first `hashed` bytes, as this process computed it, and the
    bytes this process writes past that point (a chunk that arrived before the one in front of it),
    by offset: hashed from memory once the prefix reaches them, instead of being read back. Only
    bytes this process writes, into ranges that were missing, are taken from memory: those are held
    from then on and never written again, while a chunk's bytes over a range held already may
    differ from the file's. Hashing happens outside the staging file's lock (`lock` keeps one
    thread at a time on it), in a thread of its own (`hash_toward`), so that one chunk is hashed
    while it is written and the next ones are received. The record is dropped when a write fails
    (`_store_chunk`): its hash may then have gone past what the file holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hashed = 0
        self.digest = hashlib.sha256()
        self.pending: dict[int, memoryview] = {}
        # Starts of pending bytes still being written to the file: never dropped from memory, where
        # the file may not have them yet.
        self.unwritten: set[int] = set()
        self.finished = False
        # Signalled as `hashed` moves and when the hashing thread stops; guards `target`, `hashing`.
        self.changed = threading.Condition()
        self.target = 0
        self.hashing = False

    def advance(self, fd: int, prefix: int) -> bool:
        """Hash on to `prefix` (bytes of the file held from 0); False when the record is of other
        bytes than the file's (an inode used again) or the file was finished meanwhile."""
        with self.lock, _hashing_buffer() as near:
            if self.finished or self.hashed > prefix:
                return False
            while self.hashed < prefix:
                if self.finished:
                    return False
                with _RUNNING_LOCK:
                    piece = next(
                        (
                            view[self.hashed - start : min(prefix, start + len(view)) - start]
                            for start, view in self.pending.items()
                            if start <= self.hashed < start + len(view)
                        ),
                        None,
                    )
                if piece is None:
                    piece = near[: os.preadv(fd, [near[: prefix - self.hashed]], self.hashed)]
                if not piece:
                    return False
                _hash_near(self.digest, piece, near)
                with self.changed:
                    self.hashed += len(piece)
                    self.changed.notify_all()
                with _RUNNING_LOCK:
                    for start in [s for s, view in self.pending.items() if s + len(view) <= self.hashed]:
                        del self.pending[start]
            return True

    def hash_toward(self, fd: int, prefix: int) -> None:
        """Have the file hashed on to `prefix` by this record's hashing thread (started when none
        runs, on the file opened again: a file description of its own, which the writes' O_DIRECT,
        set on `fd` for a while, does not touch)."""
        with self.changed:
            self.target = max(self.target, prefix)
            if not self.hashing and self.hashed < self.target:
                copy = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                self.hashing = True
                try:
                    threading.Thread(target=self._hash_to_target, args=(copy,), daemon=True).start()
                except BaseException:
                    os.close(copy)
                    self.hashing = False
                    raise

    def hash_on(self, fd: int, prefix: int, until: int) -> None:
        """Have the file hashed on to `prefix`, and return once the hash reached `until` or the
        hashing thread stopped short. A chunk's request waits so only for the chunks in front of its
        own: its answer goes while its own bytes are hashed, and the client sends the next chunk
        meanwhile. Chunks written and not hashed stay bounded: at most one per request still
        waiting, as many as the client sends at once."""
        self.hash_toward(fd, prefix)
        with self.changed:
            self.changed.wait_for(lambda: self.hashed >= until or not self.hashing)

    def _hash_to_target(self, fd: int) -> None:
        """The hashing thread: on to the latest target, until it has none, the record is done with,
        or the file gave fewer bytes than held (the bytes are then read back at the commit)."""
        try:
            target = self._next_target(True)
            while target is not None:
                try:
                    going = self.advance(fd, target)
                except BaseException:
                    self._next_target(False)
                    raise
                target = self._next_target(going)
        finally:
            os.close(fd)

    def _next_target(self, going: bool) -> int | None:
        """Where the hashing thread goes next, or None when it stops (marked so in the same step,
        so that a target set meanwhile is never left to a thread about to end)."""
        with self.changed:
            if going and not self.finished and self.hashed < self.target:
                return self.target
            self.hashing = False
            self.changed.notify_all()
            return None


# The running digests of the staging files this process wrote to, by (device, inode), oldest first.
_RUNNING: OrderedDict[tuple[int, int], _RunningDigest] = OrderedDict()
_RUNNING_LOCK = threading.Lock()
DIGESTS_KEPT = 64
# Bytes kept in memory to be hashed later, for all files: at most PENDING_CHUNKS chunks' worth (the
# one being hashed, those of the SDK's 3 in flight written and waiting for it, and one that came
# ahead of one still missing: other clients may send more at once); past that, the oldest files'
# go first, then this file's farthest bytes (read back from the file when their turn comes).
PENDING_CHUNKS = 6


def _file_key(handle: IO[bytes]) -> tuple[int, int]:
    status = os.fstat(handle.fileno())
    return status.st_dev, status.st_ino


def _running(
    handle: IO[bytes], written: Sequence[tuple[int, memoryview]] = (), *, writing: bool = False
) -> _RunningDigest:
    """The file's running digest (a new one for a file this process knows nothing of), with the
    bytes this request writes kept for it (`writing`: not in the file yet, so kept until
    `_written`). Called under the staging file's lock, so that the next chunk's request finds them
    however the threads are scheduled after."""
    key = _file_key(handle)
    with _RUNNING_LOCK:
        record = _RUNNING.pop(key, None) or _RunningDigest()
        _RUNNING[key] = record
        while len(_RUNNING) > DIGESTS_KEPT:
            _RUNNING.popitem(last=False)[1].finished = True
        record.pending.update(written)
        if writing:
            record.unwritten.update(start for start, _ in written)
        budget = PENDING_CHUNKS * chunk_bytes()
        kept = sum(len(view) for other in _RUNNING.values() for view in other.pending.values())
        for other in _RUNNING.values():  # the oldest files' first, this one's farthest bytes last
            for start in sorted(other.pending, reverse=True) if other is record else list(other.pending):
                if kept <= budget:
                    return record
                if start not in other.unwritten:
                    kept -= len(other.pending.pop(start))
        return record


def _written(record: _RunningDigest) -> None:
    """The bytes `record` keeps are all in the file now: any may be dropped from memory."""
    with _RUNNING_LOCK:
        record.unwritten.clear()


def _forget(handle: IO[bytes]) -> None:
    """Drop what this process knows of a staging file (finished, or a new file on a used inode)."""
    with _RUNNING_LOCK:
        record = _RUNNING.pop(_file_key(handle), None)
        if record is not None:
            record.finished = True
            record.pending.clear()


def _digest_to(handle: IO[bytes], prefix: int) -> Any:
    """The sha256 of the file's first `prefix` bytes (a file being finished, under its lock), from
    what this process hashed and kept of it, else read back from the file; None when the record
    is of another file."""
    record = _running(handle)
    return record.digest if record.advance(handle.fileno(), prefix) else None


# Whole pages of a chunk are written past the page cache (O_DIRECT): on these machines, filling the
# kernel's cache with a new 1 GiB file cost 0.2-1.9 s of CPU (fresh pages for each write), against
# 0.04 s direct. O_DIRECT wants page-aligned memory, so the bytes are copied into a buffer of this
# process's first (hot, 0.1 s per GiB). The partial pages at either end go through the cache.
PAGE = 4096
DIRECT_FROM_BYTES = 1024 * 1024
DIRECT_BUFFER_BYTES = 4 * 1024 * 1024
_BUFFERS: list[mmap.mmap] = []
_BUFFERS_LOCK = threading.Lock()


def _aligned_buffer() -> AbstractContextManager[mmap.mmap]:
    """A page-aligned buffer of DIRECT_BUFFER_BYTES, reused across requests."""
    return _reused(_BUFFERS, _BUFFERS_LOCK, lambda: mmap.mmap(-1, DIRECT_BUFFER_BYTES))


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _is_aligned(data: memoryview) -> bool:
    """Whether the bytes start on a page (an upload chunk received into aligned memory by
    trainhub/ops/request_limits.py); read-only memory (bytes) is taken as not."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(data)) % PAGE == 0
    except (TypeError, ValueError):
        return False


def _write_direct(fd: int, data: memoryview, offset: int) -> bool:
    """Write whole pages at a page-aligned offset past the page cache, from where they are when
    they start on a page, else through an aligned buffer a few MB at a time; False where the file
    system does not allow it (nothing written then)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return False
    try:
        if _is_aligned(data):
            _pwrite_all(fd, data, offset)
            return True
        with _aligned_buffer() as buffer, memoryview(buffer) as aligned:
            for start in range(0, len(data), DIRECT_BUFFER_BYTES):
                piece = data[start : start + DIRECT_BUFFER_BYTES]
                aligned[: len(piece)] = piece
                _pwrite_all(fd, aligned[: len(piece)], offset + start)
        return True
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return False  # the caller writes it all through the cache (the same bytes where some went)
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    head = min(len(data), -offset % PAGE)
    end = head + (len(data) - head) // PAGE * PAGE
    if end - head >= DIRECT_FROM_BYTES and _write_direct(fd, data[head:end], offset + head):
        _pwrite_all(fd, data[:head], offset)
        _pwrite_all(fd, data[end:], offset + end)
    else:
        _pwrite_all(fd, data, offset)


def _store_chunk(path: Path, handle: IO[bytes], chunk: Chunk, held: list[list[int]]) -> list[list[int]]:
    """Write the bytes of the chunk that are not held yet at their place, and the list of the
    ranges held after (which it returns). They are hashed from memory as they are written: a
    write that fails drops what this process hashed of the file, which may then count bytes the
    file lacks. A chunk that is not as long as its Content-Range says is refused before a byte is
    written."""
    assert chunk.start is not None and chunk.end is not None
    data = chunk.body.read(chunk.length + 1)
    if len(data) != chunk.length:
        raise ValidationError(CHUNK_LENGTH_MISMATCH.format(declared=chunk.length), code="upload_chunk_length")
    view = memoryview(data)
    pieces = []
    after = held
    for low, high in _missing(held, chunk.start, chunk.end + 1):
        pieces.append((low, view[low - chunk.start : high - chunk.start]))
        after = _with_range(after, low, high)
    record = _running(handle, pieces, writing=True)
    try:
        record.hash_toward(handle.fileno(), _held_prefix(after))
        for low, piece in pieces:
            _write_at(handle.fileno(), piece, low)
        _write_held(path, after)
    except BaseException:
        _forget(handle)
        raise
    _written(record)
    return after


def _may_start(chunk: Chunk, held: list[list[int]]) -> bool:
    """Whether the chunk starts where chunks start: a multiple of the chunk size, or where a held
    range ends (so a file is held in at most about two ranges per chunk)."""
    return chunk.start is not None and (
        chunk.start % chunk_bytes() == 0 or any(high == chunk.start for _, high in held)
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * COPY_BYTES):
            digest.update(block)
    return digest.hexdigest()


def receive(
    *,
    workspace: Any,
    kind: Kind,
    sha256: str,
    chunk: Chunk,
    existing: Callable[[str], T | None],
    commit: Callable[[str, StagedFile], T],
) -> T | Progress:
    """Take one chunk of an upload; the committed object once the whole file arrived and matched
    its sha256, else the ranges the server holds (a chunk that starts elsewhere than a multiple of
    the chunk size or the end of a held range is not stored: the client sends what is missing).
    `existing(sha256)` is what the server holds of that content already, `commit(sha256, staged)`
    stores a checked file. `sha256` may be an upload key instead: its chunks are held until a probe
    commits them (`chunk.commit`) or names the key from the file's sha256 URL (`chunk.staged_as`)."""
    _check(kind, sha256, chunk)
    if chunk.staged_as is not None:
        return _adopt(workspace, kind, chunk.staged_as, chunk.total, sha256, existing, commit)
    if chunk.commit:
        return _adopt(workspace, kind, sha256, chunk.total, None, existing, commit)
    named = not KEY_PATTERN.match(sha256)
    path = staging_path(workspace.pk, kind, f"{sha256}-{chunk.total}")
    while True:
        with _locked(path) as handle:
            if handle is None:
                continue  # finished by another request while this one waited: look again
            found = existing(sha256) if named else None
            if found is not None:
                _held_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)  # another upload of the same content finished first
                return found
            held = _read_held(path, handle)
            if not held:
                sweep_stale()
                _forget(handle)
            if chunk.start is not None and _may_start(chunk, held):
                if not held:
                    _reserve(path, handle, chunk.total)
                held = _store_chunk(path, handle, chunk, held)
            prefix = _held_prefix(held)
            record = _running(handle)
            if prefix < chunk.total or not named:
                # Hashed with the lock released: the next chunk is written meanwhile.
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                record.hash_on(handle.fileno(), prefix, until=min(chunk.start or 0, prefix))
                return Progress(held=held, size=chunk.total)
            digest = _digest_to(handle, prefix)
            _forget(handle)
            _held_path(path).unlink(missing_ok=True)
            return _finish(path, sha256, commit, digest)


# Beside a committed upload key's (gone) staging file: the sha256 it was committed as.
COMMITTED_SUFFIX = ".sha256"


def _committed_path(path: Path) -> Path:
    return path.with_name(path.name + COMMITTED_SUFFIX)


def _adopt(
    workspace: Any,
    kind: Kind,
    key: str,
    total: int,
    expected: str | None,
    existing: Callable[[str], T | None],
    commit: Callable[[str, StagedFile], T],
) -> T | Progress:
    """The file sent under upload key `key`, committed once the server holds all of it: as the
    sha256 the server computes, or, when the client named one (`expected`), as that sha256 only if
    it matches. Else what the server holds of it. When the server has that content already, the
    staged copy is deleted. A key committed before answers with what it was committed as (a
    commit sent again after its answer was lost), until the stale sweep forgets it."""
    path = staging_path(workspace.pk, kind, f"{key}-{total}")
    while True:
        with _locked(path) as handle:
            if handle is None:
                continue
            found = existing(expected) if expected is not None else None
            if found is not None:
                _held_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                return found
            held = _read_held(path, handle)
            if held != [[0, total]]:
                if not held and expected is None:
                    try:
                        committed = _committed_path(path).read_text()
                    except FileNotFoundError:
                        committed = ""
                    found = existing(committed) if SHA_PATTERN.match(committed) else None
                    if found is not None:
                        return found
                return Progress(held=held, size=total)
            digest = _digest_to(handle, total)
            _forget(handle)
            _held_path(path).unlink(missing_ok=True)
            if expected is not None:
                return _finish(path, expected, commit, digest)
            sha256 = digest.hexdigest() if digest is not None else sha256_of(path)
            _committed_path(path).write_text(sha256)
            found = existing(sha256)
            if found is not None:
                path.unlink(missing_ok=True)
                return found
            return _finish(path, sha256, commit, digest)


def store_stream(
    *,
    workspace: Any,
    kind: Kind,
    sha256: str,
    stream: Readable,
    existing: Callable[[str], T | None],
    commit: Callable[[str, StagedFile], T],
) -> T:
    """Store a file the server itself reads from a stream (no HTTP upload, nothing to resume):
    the same staging, limit, check and commit as `receive`, in one go."""
    _check_sha(sha256)
    found = existing(sha256)
    if found is not None:
        return found
    limit = kind.limit()
    path = staging_path(workspace.pk, kind, f"{sha256}-stream-{secrets.token_hex(6)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with open(path, "xb") as handle:
            while piece := stream.read(COPY_BYTES):
                size += len(piece)
                if size > limit:
                    raise _too_large(kind, f"more than {limit}")
                handle.write(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _finish(path, sha256, commit)


def _finish(path: Path, sha256: str, commit: Callable[[str, StagedFile], T], digest: Any = None) -> T:
    """Check the whole file (its running digest when this process has one) and commit it; the
    staging file is gone afterwards either way."""
    try:
        if (digest.hexdigest() if digest is not None else sha256_of(path)) != sha256:
            raise ValidationError(HASH_MISMATCH, code="upload_hash")
        staged = StagedFile(path)
        try:
            return commit(sha256, staged)
        finally:
            staged.close()
    finally:
        path.unlink(missing_ok=True)


def save_blob(model: type[B], folder: str, workspace: Any, sha256: str, staged: StagedFile) -> tuple[B, bool]:
    """Save a checked upload into storage under a name of its own (`folder/<sha256>-<random>`, so a
    racing upload never touches it) and record it as a `model` row (workspace, sha256, size,
    storage_name). When the same content was recorded meanwhile, that row is kept and this copy
    deleted: (the row, whether it is new)."""
    stored = default_storage.save(f"{folder}/{sha256}-{secrets.token_hex(6)}", staged)
    try:
        with transaction.atomic():
            row = model._default_manager.create(
                workspace=workspace, sha256=sha256, size=default_storage.size(stored), storage_name=stored
            )
    except IntegrityError:
        default_storage.delete(stored)
        return model._default_manager.get(workspace=workspace, sha256=sha256), False
    return row, True


def sweep_stale(now: float | None = None) -> int:
    """Delete staging files nobody added to for TRAINHUB_UPLOAD_STALE_SECONDS; how many."""
    cutoff = (now or time.time()) - settings.TRAINHUB_UPLOAD_STALE_SECONDS
    removed = 0
    root = upload_root()
    if not root.is_dir():
        return 0
    for path in root.glob("*/*/*"):
        if path.name.endswith((".held", ".held-new")):
            continue  # goes with its staging file
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                _held_path(path).unlink(missing_ok=True)
                removed += 1
        except FileNotFoundError:
            pass  # finished or swept by another request meanwhile
    return removed
