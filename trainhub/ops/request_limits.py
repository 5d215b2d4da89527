"""Request bodies bounded below Django, in daphne's Twisted request.

Twisted reads a whole request body before daphne hands the request to Django: into a temporary
file past 100 KB, with no limit, with or without a Content-Length. So a limit checked in a view
comes after a 50 GB body went to disk. Here a body of up to one upload chunk stays in memory (an
upload chunk is then written once, by trainhub/uploads.py), a larger one spills to a temporary
file, and one past TRAINHUB_REQUEST_MAX_BYTES (past TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES on the
scoring URL) is answered 413 and its connection closed: at once when its Content-Length says so,
and as soon as it passes the limit when it has none (chunked transfer encoding). `install()`
(called by trainhub.ops.serve) makes daphne use this request.
"""

from __future__ import annotations

import ctypes
import io
import json
import mmap
import tempfile
import threading
import time
import weakref
from errno import EAGAIN, EINTR
from typing import Any

import daphne.server
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings
from twisted.internet import main, tcp
from twisted.web.http import _IdentityTransferDecoder

from endpoints.scoring_path import TOO_LARGE, TOO_LARGE_SO_FAR, is_scoring_target

REQUEST_TOO_LARGE = (
    "The request body is larger than this server accepts ({limit} bytes). Files go up in chunks "
    "with Content-Range (the TrainHub SDK does this)."
)


# Daphne hands a body to the application in messages of this size (8 KB by default: an upload
# chunk would be a thousand trips through its queue). One upload chunk fits in one message, which
# Django then reads without a copy (trainhub/ops/flow_control.py); one byte more, since daphne
# sends an empty message after a body of exactly this size.
def request_message_bytes() -> int:
    return max(1024 * 1024, settings.TRAINHUB_UPLOAD_CHUNK_BYTES + 1)


def max_bytes() -> int:
    return settings.TRAINHUB_REQUEST_MAX_BYTES


class PiecesBody:
    """A body of known length of up to one upload chunk, kept as the pieces the socket gave and
    joined once, when first read: one copy in this process where a temporary file takes two (in,
    and out again) and grows as it goes. Read whole from its start, it is that one bytes object."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.joined: io.BytesIO | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.joined is not None:
            raise ValueError("The body was read already.")
        self.pieces.append(data)
        self.size += len(data)

    def _file(self) -> io.BytesIO:
        if self.joined is None:
            self.joined = io.BytesIO(b"".join(self.pieces))
            self.pieces = []
        return self.joined

    def tell(self) -> int:
        return self.size if self.joined is None else self.joined.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._file().read(size)

    def close(self) -> None:
        self.pieces = []
        if self.joined is not None:
            self.joined.close()
        self.closed = True


class _Region:
    """A page-aligned anonymous map of one upload chunk's size, and its address. Private, and its
    pages made at once (MAP_POPULATE): Python's default, a shared map filled by page faults, cost
    33,000-65,000 faults per GiB uploaded (shared memory pages, each faulted in on its own)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.freed = 0.0  # when it was last given back (time.monotonic())
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        self.whole = (ctypes.c_ubyte * size).from_buffer(self.map)
        self.address = ctypes.addressof(self.whole)

    def close(self) -> None:
        del self.whole
        self.map.close()


# Regions no body uses, kept for the next ones: fresh pages cost a fault per 4 KB (more than the copy
# into them), and memory freed to the heap came back fragmented (the web process grew by hundreds
# of MB over a few uploads). As many are kept as one upload from the SDK uses at once: the chunk
# being received and the ones before it still being written and hashed. A region no body took for
# REGION_IDLE_SECONDS is unmapped (by a thread of its own, started by `install`): a server that
# took an upload does not hold its chunks' memory from then on.
_FREE: list[_Region] = []
_FREE_LOCK = threading.Lock()
REGIONS_KEPT = 4
REGION_IDLE_SECONDS = 600.0
# Regions made at once, before a byte of their body arrives: only so many are held by bodies at a
# time (two uploads from the SDK at full speed). A body that would hold one more is received as
# other bodies are, into memory that grows as its bytes come, so that clients sending only heads
# cannot make the server reserve a chunk's memory for each.
REGIONS_IN_USE_MOST = 8
_in_use = 0


def aligned_memory(size: int) -> memoryview | None:
    """`size` bytes (at most one upload chunk) of page-aligned, writable memory, not cleared, taken
    back once nothing holds a view of it; None when REGIONS_IN_USE_MOST regions are held already."""
    global _in_use
    with _FREE_LOCK:
        if _in_use >= REGIONS_IN_USE_MOST:
            return None
        _in_use += 1
        region = next((free for free in _FREE if free.size >= size), None)
        if region is not None:
            _FREE.remove(region)
    try:
        if region is None:
            region = _Region(max(size, settings.TRAINHUB_UPLOAD_CHUNK_BYTES, 1))
        memory = (ctypes.c_ubyte * size).from_address(region.address)
    except BaseException:
        with _FREE_LOCK:
            _in_use -= 1
        raise
    weakref.finalize(memory, _give_back, region)
    return memoryview(memory).cast("B")


def _give_back(region: _Region) -> None:
    global _in_use
    with _FREE_LOCK:
        _in_use -= 1
        if len(_FREE) < REGIONS_KEPT:
            region.freed = time.monotonic()
            _FREE.append(region)
            return
    region.close()


def _unmap_idle_regions() -> None:
    while True:
        time.sleep(REGION_IDLE_SECONDS / 2)
        with _FREE_LOCK:
            idle = [region for region in _FREE if time.monotonic() - region.freed > REGION_IDLE_SECONDS]
            for region in idle:
                _FREE.remove(region)
        for region in idle:
            region.close()


class AlignedBody:
    """An upload chunk's body (a PUT to the API with a Content-Range), received straight into
    page-aligned memory: trainhub/uploads.py writes it past the page cache and hashes it from
    there, with no copy of its own. Read, it gives views of that memory, not bytes, so only the
    upload endpoints get one."""

    def __init__(self, memory: memoryview) -> None:
        self.memory = memory
        self.size = 0
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        end = self.size + len(data)  # Twisted passes no more than the Content-Length
        self.memory[self.size : end] = data
        self.size = self.position = end

    def receive_from(self, sock: Any, most: int) -> int:
        """Read up to `most` bytes from the socket straight to where they go (no copy of this
        process's); how many came (0: the peer closed)."""
        got: int = sock.recv_into(self.memory[self.size : self.size + most])
        self.size = self.position = self.size + got
        return got

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset + (0, self.position, self.size)[whence]
        return self.position

    def read(self, size: int | None = -1) -> memoryview:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        piece = self.memory[self.position : end]
        self.position = end
        return piece

    def close(self) -> None:
        self.closed = True


def _receive_in_place(request: BoundedRequest, body: AlignedBody) -> None:
    """Have the connection read the rest of the request's body into `body` itself (recv_into),
    not into new bytes that Twisted hands on to be copied there: 0.1 s less of the web process's
    CPU per GiB uploaded, and none of it holding the GIL. As Twisted's own read does, each read
    resets the connection's idle timeout and ends the body once its Content-Length is in; Twisted's
    read takes over again then, and at once should anything else be going on (bytes Twisted holds
    already, a paused or refused request, another transfer encoding)."""
    transport = request.channel.transport
    if not isinstance(transport, tcp.Connection):
        return  # TLS and other transports: Twisted's reads
    channel = request.channel

    def read() -> Any:
        decoder = channel._transferDecoder
        if (
            request.refused
            or not isinstance(decoder, _IdentityTransferDecoder)
            or decoder.dataCallback != request.handleContentChunk
            or not decoder.contentLength
            or channel._handlingRequest
            or channel.line_mode
            or channel._buffer
            or channel.paused
        ):
            del transport.doRead
            return transport.doRead()
        try:
            got = body.receive_from(transport.socket, min(decoder.contentLength, RECEIVE_BYTES))
        except OSError as error:
            return None if error.errno in (EAGAIN, EINTR) else main.CONNECTION_LOST
        if not got:
            return main.CONNECTION_DONE
        channel.resetTimeout()
        request.received += got
        if got < decoder.contentLength:
            decoder.contentLength -= got
            return None
        # The whole body is in: ended as _IdentityTransferDecoder ends one, with no bytes past it.
        finish = decoder.finishCallback
        decoder.dataCallback = decoder.finishCallback = None
        decoder.contentLength = 0
        del transport.doRead
        finish(b"")
        return None

    transport.doRead = read  # type: ignore[method-assign]  # the reactor looks it up at every read


def _is_upload_chunk(request: WebRequest) -> bool:
    channel = request.channel
    return (
        getattr(channel, "_command", b"") == b"PUT"
        and getattr(channel, "_path", b"").startswith(b"/api/v1/")
        and request.requestHeaders.hasHeader(b"content-range")
    )


# Twisted reads a socket 64 KB at a time; a body past LARGE_BODY_BYTES (an upload chunk) is read in
# pieces of RECEIVE_BYTES: 64 times fewer turns through Twisted's HTTP parser for each byte (4 MB
# pieces took 0.03-0.07 s less of the web process's CPU per GiB uploaded than 1 MB ones).
LARGE_BODY_BYTES = 1024 * 1024
RECEIVE_BYTES = 4 * 1024 * 1024


class BoundedRequest(WebRequest):
    refused = False
    received = 0
    limit = 0
    scoring = False
    content: PiecesBody | AlignedBody | tempfile.SpooledTemporaryFile[bytes]

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003  (Twisted's signature)
        super().__init__(*args, **kwargs)
        # Twisted parses every POST body's Content-Type with the email package, and form bodies
        # into request.args, which daphne never reads (Django parses the body it is given): that
        # was a third of the web process's CPU per scoring request.
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802  (Twisted's name)
        # The request's own path is set only once its body is in: until then Twisted's channel holds
        # the request line's target. Without it, the server's limit holds and the proxy refuses a
        # scoring body past the endpoint's once it is all read.
        self.scoring = is_scoring_target(getattr(self.channel, "_path", b""))
        self.limit = min(settings.TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES, max_bytes()) if self.scoring else max_bytes()
        if length is not None and length > self.limit:
            self.content = tempfile.SpooledTemporaryFile()
            self._refuse(length)
            return
        if length is not None and length <= settings.TRAINHUB_UPLOAD_CHUNK_BYTES:
            upload = length > LARGE_BODY_BYTES and not self.scoring and _is_upload_chunk(self)
            memory = aligned_memory(length) if upload else None
            self.content = PiecesBody() if memory is None else AlignedBody(memory)
            if length > LARGE_BODY_BYTES and hasattr(self.channel.transport, "bufferSize"):
                self.channel.transport.bufferSize = RECEIVE_BYTES
            if isinstance(self.content, AlignedBody):
                _receive_in_place(self, self.content)
            return
        self.content = tempfile.SpooledTemporaryFile(max_size=settings.TRAINHUB_UPLOAD_CHUNK_BYTES)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        if self.refused:
            return
        self.received += len(data)
        if self.received > self.limit:
            self._refuse(None)
            return
        self.content.write(data)

    def process(self) -> None:
        if not self.refused:  # a refused body can still end before its connection closes
            super().process()

    def _refuse(self, length: int | None) -> None:
        """Answer 413 and close: `length` is the body's declared length, None when it is cut off."""
        self.refused = True
        # Twisted would answer "100 Continue" right after this: the client must not send the body.
        self.requestHeaders.removeHeader(b"Expect")
        if self.scoring:  # as the proxy answers it (endpoints/proxy.py)
            said = TOO_LARGE_SO_FAR if length is None else TOO_LARGE
            error = {"detail": said.format(size=length, limit=self.limit), "code": "too_large"}
        else:
            error = {"detail": REQUEST_TOO_LARGE.format(limit=self.limit), "code": "request_too_large"}
        body = json.dumps(error).encode()
        head = (
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        self.channel.transport.write(head + body)
        self.channel.loseConnection()


class BoundedHTTPFactory(HTTPFactory):
    def __init__(self, server) -> None:  # noqa: ANN001  (daphne's Server)
        super().__init__(server)
        server.request_buffer_size = max(server.request_buffer_size, request_message_bytes())

    def buildProtocol(self, addr):  # noqa: N802, ANN001, ANN201  (Twisted's signature)
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol

    def log(self, request) -> None:  # noqa: ANN001  (Twisted's signature)
        """Daphne writes the access log: Twisted's own line per request, formatted here, went to a
        log daphne discards."""


def install() -> None:
    """Make daphne's server build BoundedRequests: daphne takes no request class as an option,
    and builds its factory from the name in its server module; start the thread that unmaps idle
    chunk regions."""
    daphne.server.HTTPFactory = BoundedHTTPFactory
    threading.Thread(target=_unmap_idle_regions, name="regions", daemon=True).start()
