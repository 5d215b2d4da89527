"""File downloads streamed from storage without reading them whole: HTTP Range, checksums."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

CHUNK = 4 * 1024 * 1024
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def _read_range(storage_name: str, start: int, length: int) -> AsyncIterator[bytes]:
    handle = await sync_to_async(default_storage.open, thread_sensitive=False)(storage_name, "rb")
    try:
        await sync_to_async(handle.seek, thread_sensitive=False)(start)
        remaining = length
        while remaining > 0:
            chunk = await sync_to_async(handle.read, thread_sensitive=False)(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


def file_response(
    request: HttpRequest,
    *,
    storage_name: str,
    filename: str,
    size: int,
    sha256: str | None = None,
    content_type: str = "application/octet-stream",
) -> HttpResponseBase:
    start, end = 0, size - 1
    status = 200
    header = request.headers.get("Range", "")
    if header:
        match = RANGE.match(header.strip())
        if match is None or (not match.group(1) and not match.group(2)):
            return _unsatisfiable(size)
        if match.group(1):
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
        else:
            start = max(0, size - int(match.group(2)))
        end = min(end, size - 1)
        if start > end or start >= size:
            return _unsatisfiable(size)
        status = 206
    length = end - start + 1 if size else 0
    response = StreamingHttpResponse(_read_range(storage_name, start, length), status=status, content_type=content_type)
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(True, filename)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    if sha256:
        response["X-Checksum-Sha256"] = sha256
        response["ETag"] = f'"{sha256}"'
    return response


def _unsatisfiable(size: int) -> HttpResponse:
    response = HttpResponse(status=416)
    response["Content-Range"] = f"bytes */{size}"
    return response
