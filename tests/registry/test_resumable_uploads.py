"""Uploads of local model files through a live server: written to disk once, resumed after an
interruption from the bytes the server already holds, and abandoned ones cleaned up."""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from registry.models import ModelBlob
from registry.services import BLOB_UPLOADS
from tests.helpers.processes import bytes_written
from trainhub import uploads
from trainhub.sdk import Model
from trainhub.sdk._transport import Transport
from trainhub.sdk._uploads import file_identity, known_sha256, upload_file, upload_file_keyed, upload_key

CHUNK = settings.TRAINHUB_UPLOAD_CHUNK_BYTES


class Interrupted(Exception):
    """The client stops mid-upload (a lost connection, a killed process)."""


def stop_after_one_chunk(received: int, total: int) -> None:
    if received > 0:
        raise Interrupted


class CountingTransport(Transport):
    """The SDK's transport, counting the bytes of the bodies it sends (from several threads)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[int] = []

    @property
    def sent(self) -> int:
        return sum(self.bodies)

    def request(self, method: str, path: str, **kwargs):
        self.bodies.append(len(kwargs.get("data") or b""))
        return super().request(method, path, **kwargs)


def upload_one_chunk(sdk_ws, local: Path, sha256: str) -> None:
    """One chunk stored, sent alone (no other on its way when the client stops)."""
    with pytest.raises(Interrupted):
        path = sdk_ws.api(f"model-blobs/{sha256}")
        upload_file(sdk_ws._http, path, local, on_progress=stop_after_one_chunk, threads=1)


def write_model(path: Path, size: int, salt: bytes = b"") -> str:
    block = hashlib.sha256(salt).digest() * (1 << 15)  # 1 MiB, different per salt
    with open(path, "wb") as handle:
        for start in range(0, size, len(block)):
            handle.write(block[: min(len(block), size - start)])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def probe(sdk_ws, sha256: str, size: int) -> requests.Response:
    return requests.put(
        f"{sdk_ws.url}/api/v1/{sdk_ws.api(f'model-blobs/{sha256}')}",
        headers={"Authorization": f"Bearer {sdk_ws._token}", "Content-Range": f"bytes */{size}"},
        timeout=30,
    )


def test_an_interrupted_upload_resumes_from_the_bytes_the_server_holds(sdk_ws, tmp_path):
    local = tmp_path / "model.pt"
    size = 2 * CHUNK + 12345
    sha256 = write_model(local, size)
    upload_one_chunk(sdk_ws, local, sha256)
    assert probe(sdk_ws, sha256, size).json()["received"] == CHUNK

    starts: list[int] = []
    path = sdk_ws.api(f"model-blobs/{sha256}")
    upload_file(sdk_ws._http, path, local, on_progress=lambda received, total: starts.append(received), threads=1)
    assert starts == [CHUNK, 2 * CHUNK, size]

    model = Model.register(sdk_ws, str(local), "resumed", show_progress=False)
    assert model.version == 1
    target = tmp_path / "downloaded"
    model.download(target_dir=str(target), show_progress=False)
    assert hashlib.sha256((target / "model.pt").read_bytes()).hexdigest() == sha256


def test_a_parallel_upload_cut_off_midway_resumes_with_what_is_missing_and_is_written_once(
    sdk_ws, live_server_process, tmp_path
):
    """Chunks go up several at once; the client stops after the first is stored (the others on
    their way still land, in any order). The next upload sends only the ranges the server lacks,
    and the server wrote each byte once."""
    local = tmp_path / "model.pt"
    size = 7 * CHUNK + 12345
    sha256 = write_model(local, size, salt=b"parallel")
    path = sdk_ws.api(f"model-blobs/{sha256}")
    before = bytes_written(live_server_process.process.pid)
    with pytest.raises(Interrupted):
        upload_file(sdk_ws._http, path, local, on_progress=stop_after_one_chunk, threads=3)
    held = probe(sdk_ws, sha256, size).json()["held"]
    held_bytes = sum(end - start for start, end in held)
    assert 0 < held_bytes < size

    progress: list[int] = []
    counting = CountingTransport(sdk_ws._http.base_url, sdk_ws._http.token)
    finished = upload_file(counting, path, local, on_progress=lambda got, _: progress.append(got), threads=3)
    written = bytes_written(live_server_process.process.pid) - before
    assert finished == {"sha256": sha256, "size": size}
    assert progress[0] == held_bytes and progress[-1] == size
    assert counting.sent == size - held_bytes
    assert size <= written < size + 2 * 1024 * 1024
    model = Model.register(sdk_ws, str(local), "parallel", show_progress=False)
    assert ModelBlob.objects.filter(sha256=sha256).count() == 1
    target = tmp_path / "downloaded"
    model.download(target_dir=str(target), show_progress=False)
    assert hashlib.sha256((target / "model.pt").read_bytes()).hexdigest() == sha256


def test_an_upload_the_server_names_resumes_under_its_key_with_what_is_missing(sdk_ws, live_server_process, tmp_path):
    """A file larger than a chunk goes up unhashed, under a key taken from the token and the local
    file; cut off, the next upload of the same file sends only what the server lacks, and the file
    is stored once under the sha256 the server computed, which this process then knows."""
    local = tmp_path / "model.pt"
    size = 5 * CHUNK + 777
    sha256 = write_model(local, size, salt=b"named by the server")
    folder = sdk_ws.api("model-blobs")
    before = bytes_written(live_server_process.process.pid)
    with pytest.raises(Interrupted):
        upload_file_keyed(sdk_ws._http, folder, local, on_progress=stop_after_one_chunk, threads=2)
    held = probe(sdk_ws, upload_key(local, file_identity(local), sdk_ws._token), size).json()["held"]
    held_bytes = sum(end - start for start, end in held)
    assert 0 < held_bytes < size
    assert not ModelBlob.objects.filter(sha256=sha256).exists()

    counting = CountingTransport(sdk_ws._http.base_url, sdk_ws._http.token)
    finished = upload_file_keyed(counting, folder, local, threads=2)

    assert finished == {"sha256": sha256, "size": size}
    assert counting.sent == size - held_bytes
    assert size <= bytes_written(live_server_process.process.pid) - before < size + 2 * 1024 * 1024
    assert known_sha256(local) == sha256
    model = Model.register(sdk_ws, str(local), "hashed", show_progress=False)
    assert model.get_details()["files"][0]["sha256"] == sha256
    assert ModelBlob.objects.filter(sha256=sha256).count() == 1


def test_a_local_register_writes_the_file_on_the_server_once(sdk_ws, live_server_process, tmp_path):
    local = tmp_path / "model.pt"
    size = 3 * CHUNK
    write_model(local, size, salt=b"once")
    before = bytes_written(live_server_process.process.pid)
    model = Model.register(sdk_ws, str(local), "written-once", show_progress=False)
    written = bytes_written(live_server_process.process.pid) - before
    assert model.get_details()["files"][0]["size"] == size
    # The staging file is the one copy (it is renamed into storage); the rest is the database.
    assert size <= written < size + 2 * 1024 * 1024


def test_an_abandoned_upload_is_deleted_once_stale_when_the_next_upload_starts(sdk_ws, tmp_path, workspace):
    abandoned = tmp_path / "abandoned.pt"
    size = CHUNK + 1
    sha256 = write_model(abandoned, size, salt=b"abandoned")
    upload_one_chunk(sdk_ws, abandoned, sha256)
    staged = uploads.staging_path(workspace.pk, BLOB_UPLOADS, f"{sha256}-{size}")
    assert staged.is_file() and probe(sdk_ws, sha256, size).json()["received"] == CHUNK
    recent = tmp_path / "recent.pt"
    recent_sha = write_model(recent, size, salt=b"recent")
    upload_one_chunk(sdk_ws, recent, recent_sha)
    stale = time.time() - settings.TRAINHUB_UPLOAD_STALE_SECONDS - 60
    os.utime(staged, (stale, stale))

    Model.register(sdk_ws, str(write_model_at(tmp_path / "next.pt")), "next", show_progress=False)

    assert probe(sdk_ws, sha256, size).json()["received"] == 0
    assert probe(sdk_ws, recent_sha, size).json()["received"] == CHUNK


def write_model_at(path: Path) -> Path:
    path.write_bytes(b"a small model")
    return path


def test_an_uploaded_file_no_version_holds_is_deleted_once_stale(sdk_ws, tmp_path):
    kept = Model.register(sdk_ws, str(write_model_at(tmp_path / "kept.pt")), "kept", show_progress=False)
    orphan = tmp_path / "orphan.pt"
    orphan.write_bytes(b"uploaded, never registered")
    orphan_sha = hashlib.sha256(orphan.read_bytes()).hexdigest()
    upload_file(sdk_ws._http, sdk_ws.api(f"model-blobs/{orphan_sha}"), orphan)
    stored = ModelBlob.objects.get(sha256=orphan_sha).storage_name
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINHUB_UPLOAD_STALE_SECONDS + 60)
    ModelBlob.objects.update(created_at=long_ago)

    another = tmp_path / "another.pt"
    another.write_bytes(b"the next upload")
    Model.register(sdk_ws, str(another), "another", show_progress=False)

    assert (
        requests.get(
            f"{sdk_ws.url}/api/v1/{sdk_ws.api(f'model-blobs/{orphan_sha}')}",
            headers={"Authorization": f"Bearer {sdk_ws._token}"},
            timeout=30,
        ).status_code
        == 404
    )
    assert not default_storage.exists(stored)
    target = tmp_path / "kept-download"
    Model(sdk_ws, name="kept").download(target_dir=str(target), show_progress=False)
    assert (target / "kept.pt").read_bytes() == b"a small model"
    assert kept.version == 1


def put_range(sdk_ws, sha256: str, content: bytes, start: int, end: int) -> requests.Response:
    return requests.put(
        f"{sdk_ws.url}/api/v1/{sdk_ws.api(f'model-blobs/{sha256}')}",
        data=content[start : end + 1],
        headers={"Authorization": f"Bearer {sdk_ws._token}", "Content-Range": f"bytes {start}-{end}/{len(content)}"},
        timeout=30,
    )


def test_a_retried_chunk_is_stored_once_and_a_chunk_past_the_gap_not_at_all(sdk_ws):
    content = bytes(range(256)) * 4
    sha256 = hashlib.sha256(content).hexdigest()
    assert put_range(sdk_ws, sha256, content, 0, 399).json()["received"] == 400
    # The answer to that chunk was lost: the client sends it again, with more.
    assert put_range(sdk_ws, sha256, content, 0, 599).json()["received"] == 600
    # A chunk beyond what arrived is not kept: the client is told where to go on from.
    assert put_range(sdk_ws, sha256, content, 800, 1023).json()["received"] == 600
    finished = put_range(sdk_ws, sha256, content, 600, 1023)
    assert finished.status_code == 201
    assert finished.json() == {"sha256": sha256, "size": 1024}
    with default_storage.open(ModelBlob.objects.get(sha256=sha256).storage_name) as stored:
        assert stored.read() == content


def test_an_upload_that_does_not_match_its_sha256_is_dropped_whole(sdk_ws, workspace):
    content = b"x" * 1000
    claimed = hashlib.sha256(b"something else").hexdigest()
    assert put_range(sdk_ws, claimed, content, 0, 499).status_code == 200
    damaged = put_range(sdk_ws, claimed, content, 500, 999)
    assert damaged.status_code == 400
    assert damaged.json()["detail"] == uploads.HASH_MISMATCH
    assert probe(sdk_ws, claimed, 1000).json()["received"] == 0
    assert not ModelBlob.objects.exists()


def test_chunks_sent_last_first_are_stored_whole_and_checked(sdk_ws, tmp_path):
    """Chunks in flight arrive in any order: those ahead of the hashed part wait in memory, and the
    file is checked and stored once the first arrives."""
    local = tmp_path / "model.pt"
    size = 3 * CHUNK + 4097
    sha256 = write_model(local, size, salt=b"backwards")
    content = local.read_bytes()
    starts = list(range(0, size, CHUNK))
    for start in reversed(starts[1:]):
        assert put_range(sdk_ws, sha256, content, start, min(start + CHUNK, size) - 1).status_code == 200

    finished = put_range(sdk_ws, sha256, content, 0, CHUNK - 1)

    assert finished.status_code == 201 and finished.json() == {"sha256": sha256, "size": size}
    with default_storage.open(ModelBlob.objects.get(sha256=sha256).storage_name) as stored:
        assert stored.read() == content


def test_a_chunk_is_answered_while_its_bytes_are_hashed_and_waits_only_for_those_in_front(tmp_path, settings):
    """The server hashes an upload in a thread of its own: a chunk's answer waits until the
    chunks in front of it are hashed, not its own bytes, so the client sends the next chunk
    meanwhile; the file is still checked whole against its sha256."""
    settings.TRAINHUB_UPLOAD_DIR = str(tmp_path / "uploads")
    settings.TRAINHUB_UPLOAD_CHUNK_BYTES = chunk = 64 * 1024
    kind = uploads.Kind(name="things", limit=lambda: 1 << 20)
    content = os.urandom(4 * chunk)
    sha256 = hashlib.sha256(content).hexdigest()
    stored: list[bytes] = []

    def send(start: int) -> object:
        body = io.BytesIO(content[start : start + chunk])
        return uploads.receive(
            workspace=SimpleNamespace(pk=1),
            kind=kind,
            sha256=sha256,
            chunk=uploads.Chunk(start=start, end=start + chunk - 1, total=len(content), body=body),
            existing=lambda _: None,
            commit=lambda _, staged: stored.append(Path(staged.temporary_file_path()).read_bytes()) or "stored",
        )

    assert isinstance(send(0), uploads.Progress)
    staging = uploads.staging_path(1, kind, f"{sha256}-{len(content)}")
    status = staging.stat()
    hashing = uploads._RUNNING[(status.st_dev, status.st_ino)]
    with hashing.changed:
        assert hashing.changed.wait_for(lambda: hashing.hashed == chunk, timeout=30)
    with ThreadPoolExecutor(2) as pool:
        with hashing.lock:  # the hash held up where chunk 1 starts
            # Answered: only chunk 0 is in front of it.
            assert isinstance(pool.submit(send, chunk).result(timeout=30), uploads.Progress)
            second = pool.submit(send, 2 * chunk)  # waits for chunk 1 to be hashed
            done, _ = wait([second], timeout=1)
            assert not done and hashing.hashed == chunk
        assert isinstance(second.result(timeout=30), uploads.Progress)
        assert send(3 * chunk) == "stored"
    assert stored == [content]
