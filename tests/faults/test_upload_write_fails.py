"""The disk refuses a chunk of an upload (full, or failing) after the server hashed its bytes, which it
does while it writes them: the server forgets what it hashed of that file, so the chunk sent again
with other bytes (the client's file changed, or another client sent it) is what the file's sha256
is computed from, and the file is stored under the sha256 of what it holds."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from django.conf import settings
from django.core.files.storage import default_storage

from registry.models import ModelBlob
from tests.conftest import api_client, issue_token
from trainhub import uploads

CHUNK = settings.TRAINHUB_UPLOAD_CHUNK_BYTES


def put(api, sha256: str, body: bytes, start: int, size: int):
    return api.put(
        f"/api/v1/workspaces/birds/model-blobs/{sha256}",
        data=body,
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE=f"bytes {start}-{start + len(body) - 1}/{size}",
    )


@pytest.fixture
def disk_refusing_the_second_chunk(monkeypatch):
    """os.pwrite fails with ENOSPC at the first write into the file's second chunk, once the
    server's hash of the file took in that chunk's bytes (the fault at its worst moment)."""
    failed: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:
        if offset < CHUNK or failed:
            return real(fd, data, offset)
        failed.append(offset)
        status = os.fstat(fd)
        record = uploads._RUNNING[(status.st_dev, status.st_ino)]
        with record.changed:
            assert record.changed.wait_for(lambda: record.hashed >= 2 * CHUNK, timeout=30)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", pwrite)
    return failed


def test_a_chunk_the_disk_refused_is_hashed_as_it_is_sent_again(workspace, owner, disk_refusing_the_second_chunk):
    api = api_client(issue_token(workspace, owner))
    first, second = os.urandom(CHUNK), os.urandom(CHUNK)
    sha256 = hashlib.sha256(first + second).hexdigest()
    assert put(api, sha256, first, 0, 2 * CHUNK).status_code == 200

    with pytest.raises(OSError, match="No space left on device"):
        put(api, sha256, os.urandom(CHUNK), CHUNK, 2 * CHUNK)  # other bytes than the file's
    assert disk_refusing_the_second_chunk, "the disk refused the chunk"
    answer = put(api, sha256, second, CHUNK, 2 * CHUNK)

    assert answer.status_code == 201, answer.json()
    assert answer.json()["sha256"] == sha256
    with default_storage.open(ModelBlob.objects.get(sha256=sha256).storage_name) as stored:
        assert stored.read() == first + second
