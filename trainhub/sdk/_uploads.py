"""Resumable uploads (model files, snapshots): the client side of trainhub/uploads.py.

Standard library only: a training script registering a model from inside a run uses it too.
A file goes up in chunks, each a PUT with `Content-Range: bytes START-END/TOTAL`; the server says
how much it holds after each, and a probe (`bytes */TOTAL`) asks it before the first, so an upload
cut off by a lost connection, a restarted server or a killed client resumes where it stopped.
A chunk is a PUT of a byte range, so the transport sends it again after a timeout: the server
appends only the bytes past what it holds, and a repeated last chunk finds the file committed
and gets the same answer. Nothing is stored twice, and no idempotency key is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainhub.sdk._transport import Transport

CHUNK_BYTES = 8 * 1024 * 1024


def _put(http: Transport, path: str, data: bytes, content_range: str) -> tuple[int, dict[str, Any]]:
    response = http.request(
        "PUT",
        path,
        data=data,
        headers={"Content-Type": "application/octet-stream", "Content-Range": content_range},
        timeout=(5, 600),
    )
    with response:
        return response.status_code, response.json()


def upload_file(
    http: Transport,
    path: str,
    local: Path,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Send `local` to the upload endpoint `path` from wherever the server has it up to; the
    server's answer for the finished file. `on_progress(received, size)` is called before each
    chunk is sent (the first call says where the upload starts or resumes) and at the end."""
    size = local.stat().st_size
    sent = False
    with open(local, "rb") as handle:
        status, answer = _put(http, path, b"", f"bytes */{size}")
        while status != 201:
            sent = True
            received = answer["received"]
            if on_progress is not None:
                on_progress(received, size)
            handle.seek(received)
            data = handle.read(min(CHUNK_BYTES, answer.get("chunk_bytes") or CHUNK_BYTES))
            content_range = f"bytes {received}-{received + len(data) - 1}/{size}"
            status, answer = _put(http, path, data, content_range)
    if sent and on_progress is not None:
        on_progress(size, size)
    return answer


def progress_bar(description: str, show: bool) -> Any:
    """An `on_progress` that moves a tqdm bar (None when not shown)."""
    if not show:
        return None
    from tqdm import tqdm

    bars: list[Any] = []

    def update(received: int, size: int) -> None:
        if not bars:  # made at the first chunk: nothing shows when the server had the file
            bars.append(tqdm(total=size, initial=received, unit="B", unit_scale=True, desc=description, leave=False))
        bars[0].update(received - bars[0].n)
        if received >= size:
            bars[0].close()

    return update
