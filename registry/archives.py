"""A folder version as a zip, generated while it is sent: never built in memory or on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

import zipstream
from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from registry.models import ModelFile, ModelVersion
from trainhub.downloads import file_response

CHUNK = 4 * 1024 * 1024


def _stored_bytes(storage_name: str) -> Iterator[bytes]:
    with default_storage.open(storage_name, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _in_worker_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Storage reads block: each runs in a worker thread, so the server's event loop keeps serving.
    step = sync_to_async(_next_chunk, thread_sensitive=False)
    while (chunk := await step(chunks)) is not None:
        yield chunk


def zip_response(files: Iterable[ModelFile], *, filename: str) -> StreamingHttpResponse:
    """Stored (uncompressed: model weights barely compress) so the length is known up front."""
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    for model_file in files:
        archive.add(_stored_bytes(model_file.storage_name), model_file.path, size=model_file.size)
    response = StreamingHttpResponse(_in_worker_thread(iter(archive)), content_type="application/zip")
    response["Content-Length"] = str(len(archive))
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def version_download(request: HttpRequest, version: ModelVersion, files: list[ModelFile]) -> HttpResponseBase:
    """A single-file version as itself (Range, checksum headers); a folder version as a zip."""
    if not version.is_folder and len(files) == 1:
        return file_download(request, files[0])
    return zip_response(files, filename=f"{version.model.name}-{version.version}.zip")


def file_download(request: HttpRequest, model_file: ModelFile) -> HttpResponseBase:
    return file_response(
        request,
        storage_name=model_file.storage_name,
        filename=model_file.path.rsplit("/", 1)[-1],
        size=model_file.size,
        sha256=model_file.sha256,
    )
