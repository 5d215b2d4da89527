"""A stored upload is the bytes its sha256 names: a chunk sent again over bytes the server holds,
with other bytes, neither changes the file nor passes for it."""

from __future__ import annotations

import hashlib

import requests
from django.core.files.storage import default_storage

from registry.models import ModelBlob
from trainhub import uploads

SIZE = 16 * 1024


def put(sdk_ws, sha256: str, body: bytes, start: int, size: int = SIZE) -> requests.Response:
    return requests.put(
        f"{sdk_ws.url}/api/v1/{sdk_ws.api(f'model-blobs/{sha256}')}",
        data=body,
        headers={
            "Authorization": f"Bearer {sdk_ws._token}",
            "Content-Range": f"bytes {start}-{start + len(body) - 1}/{size}",
        },
        timeout=30,
    )


def test_bytes_sent_again_differently_over_a_held_range_are_not_taken_for_the_file(sdk_ws, workspace):
    """The client holds the server to the first bytes it sent; when the server no longer has the
    running hash of that file in memory (other uploads pushed it out), the whole chunk sent again,
    its held part changed, must not be hashed in place of what the file holds."""
    first = b"A" * (SIZE // 2)
    claimed = b"B" * SIZE
    sha256 = hashlib.sha256(claimed).hexdigest()
    assert put(sdk_ws, sha256, first, 0).json()["received"] == SIZE // 2
    for index in range(uploads.DIGESTS_KEPT + 1):  # as many other uploads started meanwhile
        other = hashlib.sha256(f"other upload {index}".encode()).hexdigest()
        assert put(sdk_ws, other, b"x" * 10, 0, size=20).status_code == 200

    answer = put(sdk_ws, sha256, claimed, 0)

    assert answer.status_code == 400 and answer.json()["detail"] == uploads.HASH_MISMATCH
    assert not ModelBlob.objects.filter(sha256=sha256).exists()
    for blob in ModelBlob.objects.all():
        with default_storage.open(blob.storage_name) as stored:
            assert hashlib.sha256(stored.read()).hexdigest() == blob.sha256
