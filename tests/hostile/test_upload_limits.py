"""Upload limits hold against clients that lie or never stop: a body past the server's request
limit is refused before it is read (with a Content-Length) or as soon as it passes the limit
(chunked, no Content-Length), and a file past its kind's limit never reaches the disk."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
import requests

from registry import services
from registry.models import ModelBlob
from tests.helpers.chunked import send_chunks
from tests.helpers.processes import Server, bytes_written
from trainhub import uploads
from trainhub.ops.request_limits import REQUEST_TOO_LARGE

REQUEST_MAX = 1024 * 1024
CHUNK = 256 * 1024
MODEL_MAX = 4 * 1024 * 1024
SHA = "c" * 64

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One daphne for the module, with limits small enough to pass quickly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINHUB_REQUEST_MAX_BYTES", str(REQUEST_MAX))
        patch.setenv("TRAINHUB_UPLOAD_CHUNK_BYTES", str(CHUNK))
        patch.setenv("TRAINHUB_MODEL_MAX_BYTES", str(MODEL_MAX))
        server = Server(tmp_path_factory.mktemp("limits")).start()
    yield server
    server.stop()


@pytest.fixture
def url(limited_server, transactional_db, workspace):
    return f"{limited_server.url}/api/v1/workspaces/birds/model-blobs"


@pytest.fixture
def headers(owner_token):
    return {"Authorization": f"Bearer {owner_token}"}


def staged_files(workspace) -> list[str]:
    """Partial uploads the server keeps for this test's workspace."""
    root = uploads.upload_root() / str(workspace.pk)
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def raw_request(server: Server, head: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(head.encode())
    return connection


def read_answer(connection: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields.get(b"Content-Length", b"0"))
    while len(body) < length:
        body += connection.recv(65536)
    return status, json.loads(body), head


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_body_declared_past_the_request_limit_is_refused_before_it_is_sent(
    limited_server, url, owner_token, workspace
):
    before = bytes_written(limited_server.process.pid)
    connection = raw_request(
        limited_server,
        f"PUT /api/v1/workspaces/birds/model-blobs/{SHA} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {owner_token}\r\nContent-Length: {50 * 1024**3}\r\n"
        "Expect: 100-continue\r\n\r\n",
    )
    with connection:
        status, answer, head = read_answer(connection)
        assert status == 413
        assert b"100 Continue" not in head
        assert answer == {"detail": REQUEST_TOO_LARGE.format(limit=REQUEST_MAX), "code": "request_too_large"}
        assert closed_by_server(connection)
    assert bytes_written(limited_server.process.pid) - before < 64 * 1024
    assert staged_files(workspace) == []
    assert requests.get(f"{limited_server.url}/accounts/login/", timeout=10).status_code == 200


def test_a_chunked_body_without_length_is_cut_off_once_past_the_limit(limited_server, url, owner_token, workspace):
    before = bytes_written(limited_server.process.pid)
    connection = raw_request(
        limited_server,
        f"PUT /api/v1/workspaces/birds/model-blobs/{SHA} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {owner_token}\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    attempted = 256 * 1024 * 1024
    with connection:
        sent = send_chunks(connection, attempted)
    assert sent < attempted, "the server read a 256 MB body that has no length"
    # What the server spilled to its temporary file before it stopped: at most the limit.
    assert bytes_written(limited_server.process.pid) - before <= REQUEST_MAX + 64 * 1024
    assert staged_files(workspace) == []
    assert not ModelBlob.objects.exists()
    assert requests.get(f"{limited_server.url}/accounts/login/", timeout=10).status_code == 200


def test_a_file_declared_past_the_model_limit_is_refused_before_a_byte_is_kept(url, headers, workspace):
    answer = requests.put(
        f"{url}/{SHA}",
        data=b"x" * 1024,
        headers={**headers, "Content-Range": f"bytes 0-1023/{MODEL_MAX + 1}"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == services.BLOB_TOO_LARGE.format(size=MODEL_MAX + 1, limit=MODEL_MAX)
    assert staged_files(workspace) == []


def test_a_chunk_larger_than_the_server_takes_is_refused(url, headers, workspace):
    answer = requests.put(
        f"{url}/{SHA}",
        data=b"x" * (CHUNK + 1),
        headers={**headers, "Content-Range": f"bytes 0-{CHUNK}/{2 * CHUNK}"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == uploads.CHUNK_TOO_LARGE.format(limit=CHUNK)
    assert staged_files(workspace) == []


def test_a_chunk_shorter_than_its_range_changes_nothing(url, headers, workspace):
    content = b"0123456789" * 100
    sha = hashlib.sha256(content).hexdigest()
    first = requests.put(
        f"{url}/{sha}", data=content[:400], headers={**headers, "Content-Range": "bytes 0-399/1000"}, timeout=30
    )
    assert first.status_code == 200 and first.json()["received"] == 400
    lying = requests.put(
        f"{url}/{sha}", data=content[400:500], headers={**headers, "Content-Range": "bytes 400-999/1000"}, timeout=30
    )
    assert lying.status_code == 400
    assert lying.json()["detail"] == uploads.CHUNK_LENGTH_MISMATCH.format(declared=600)
    probe = requests.put(f"{url}/{sha}", headers={**headers, "Content-Range": "bytes */1000"}, timeout=30)
    assert probe.status_code == 200 and probe.json()["received"] == 400


def test_the_sdk_is_told_the_limit_before_it_sends_the_file(limited_server, url, owner_token, tmp_path, workspace):
    from trainhub.sdk import Model, Workspace
    from trainhub.sdk.exceptions import UserErrorException

    big = tmp_path / "model.pt"
    big.write_bytes(b"w" * (MODEL_MAX + 1))
    before = bytes_written(limited_server.process.pid)
    ws = Workspace.get("birds", url=limited_server.url, token=owner_token)
    with pytest.raises(UserErrorException, match=f"the limit for a model file is {MODEL_MAX} bytes"):
        Model.register(ws, str(big), "too-big", show_progress=False)
    assert bytes_written(limited_server.process.pid) - before < 64 * 1024
    assert staged_files(workspace) == []
