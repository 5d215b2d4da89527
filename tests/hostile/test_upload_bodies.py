"""An upload chunk's body is read from the socket straight into the server's chunk buffer
(trainhub/ops/request_limits.py). Clients that send it oddly get what any client gets: a body
that trickles in, split anywhere and paused, is stored byte for byte; a request sent right behind
a body on the same connection is answered after it and adds nothing to it; a body cut off stores
nothing, and one that stalls holds up only its own connection. Clients that send only the heads of
chunks (no token needed) do not make the server set a chunk's memory aside for each."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
from django.conf import settings
from django.core.files.storage import default_storage

from registry.models import ModelBlob
from trainhub.ops.request_limits import REGIONS_IN_USE_MOST
from trainhub.sdk import Model

pytestmark = pytest.mark.slow

CHUNK = settings.TRAINHUB_UPLOAD_CHUNK_BYTES


class Connection:
    """A client speaking HTTP/1.1 on one socket by hand, reading answers one after another."""

    def __init__(self, url: str, token: str):
        host, port = url.removeprefix("http://").split(":")
        self.socket = socket.create_connection((host, int(port)), timeout=30)
        self.token = token
        self.unread = b""

    def head(self, sha256: str, content_range: str, length: int) -> bytes:
        return (
            f"PUT /api/v1/workspaces/birds/model-blobs/{sha256} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Range: {content_range}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def answer(self) -> tuple[int, dict]:
        while b"\r\n\r\n" not in self.unread:
            self._receive()
        head, _, self.unread = self.unread.partition(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        while len(self.unread) < length:
            self._receive()
        body, self.unread = self.unread[:length], self.unread[length:]
        return int(head.split(b" ", 2)[1]), json.loads(body)

    def _receive(self) -> None:
        piece = self.socket.recv(65536)
        if not piece:
            raise ConnectionError("The server closed the connection.")
        self.unread += piece

    def close(self) -> None:
        self.socket.close()


def model_file(size: int) -> tuple[bytes, str]:
    content = os.urandom(size)
    return content, hashlib.sha256(content).hexdigest()


def chunk_range(start: int, size: int) -> tuple[int, str]:
    end = min(start + CHUNK, size)
    return end, f"bytes {start}-{end - 1}/{size}"


def send_rest(connection: Connection, content: bytes, sha256: str, start: int) -> tuple[int, dict]:
    """The chunks from `start` on, one request after another: the last answer."""
    answer: tuple[int, dict] = (0, {})
    while start < len(content):
        end, content_range = chunk_range(start, len(content))
        connection.send(connection.head(sha256, content_range, end - start) + content[start:end])
        answer = connection.answer()
        start = end
    return answer


def stored(sha256: str) -> bytes:
    with default_storage.open(ModelBlob.objects.get(sha256=sha256).storage_name) as handle:
        return handle.read()


def probe(connection: Connection, sha256: str, size: int) -> dict:
    connection.send(connection.head(sha256, f"bytes */{size}", 0))
    status, answer = connection.answer()
    assert status == 200, answer
    return answer


def test_a_body_that_trickles_in_split_anywhere_is_stored_byte_for_byte(sdk_ws, workspace):
    content, sha256 = model_file(2 * CHUNK + 4321)
    connection = Connection(sdk_ws.url, sdk_ws._token)
    end, content_range = chunk_range(0, len(content))
    # The head and the body's first bytes in one send, then pieces of every size, with pauses.
    connection.send(connection.head(sha256, content_range, end) + content[:1000])
    position, sizes = 1000, [1, 7, 4096, 65537, 1024 * 1024 + 3, 17, 3 * 1024 * 1024]
    while position < end:
        size = min(sizes[0], end - position)
        connection.send(content[position : position + size])
        position += size
        sizes = sizes[1:] + sizes[:1]
        time.sleep(0.005)
    status, answer = connection.answer()
    assert status == 200 and answer["held"] == [[0, CHUNK]], answer

    status, answer = send_rest(connection, content, sha256, CHUNK)

    assert status == 201 and answer == {"sha256": sha256, "size": len(content)}
    assert stored(sha256) == content
    connection.close()


def test_a_request_right_behind_a_body_is_answered_after_it_and_adds_nothing_to_it(sdk_ws, workspace):
    content, sha256 = model_file(CHUNK + 99)
    connection = Connection(sdk_ws.url, sdk_ws._token)
    end, content_range = chunk_range(0, len(content))
    behind = connection.head(sha256, f"bytes */{len(content)}", 0)

    connection.send(connection.head(sha256, content_range, end) + content[:end] + behind)

    first, second = connection.answer(), connection.answer()
    assert first[0] == 200 and first[1]["held"] == [[0, CHUNK]], first
    assert second[0] == 200 and second[1]["held"] == [[0, CHUNK]], second
    status, answer = send_rest(connection, content, sha256, CHUNK)
    assert status == 201 and stored(sha256) == content  # the server checked the sha256 of it all
    connection.close()


def test_a_body_cut_off_stores_nothing_and_a_stalled_one_holds_up_only_its_connection(sdk_ws, workspace):
    content, sha256 = model_file(CHUNK + 5)
    end, content_range = chunk_range(0, len(content))
    cut = Connection(sdk_ws.url, sdk_ws._token)
    cut.send(cut.head(sha256, content_range, end) + content[: end // 2])
    cut.close()
    stalled = Connection(sdk_ws.url, sdk_ws._token)
    stalled.send(stalled.head(sha256, content_range, end) + content[: end // 3])

    # Meanwhile another client uploads the same file whole, on a connection of its own.
    other = Connection(sdk_ws.url, sdk_ws._token)
    assert probe(other, sha256, len(content))["held"] == []
    status, answer = send_rest(other, content, sha256, 0)
    assert status == 201 and stored(sha256) == content
    other.close()

    # The stalled body, finished at last, finds the file stored.
    stalled.send(content[end // 3 : end])
    status, answer = stalled.answer()
    assert status == 201 and answer == {"sha256": sha256, "size": len(content)}
    stalled.close()
    assert ModelBlob.objects.filter(workspace=workspace, sha256=sha256).count() == 1


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_heads_of_chunks_without_their_bodies_do_not_make_the_server_set_memory_aside(
    live_server_process, sdk_ws, workspace, tmp_path
):
    """A chunk's body is received into memory made whole when its head arrives (trainhub/ops/
    request_limits.py): only so many are made at a time, so heads alone, from a client with no
    token, cost the server no more than that, and uploads still go through meanwhile."""
    pid = live_server_process.process.pid
    before = resident_bytes(pid)
    heads = 5 * REGIONS_IN_USE_MOST
    held = []
    try:
        for index in range(heads):
            connection = Connection(sdk_ws.url, "not-a-token")
            connection.send(connection.head(f"{index:064x}", f"bytes 0-{CHUNK - 1}/{2 * CHUNK}", CHUNK) + b"x")
            held.append(connection)
        other = Connection(sdk_ws.url, sdk_ws._token)  # answered once the server read the heads before it
        assert probe(other, "f" * 64, 10)["held"] == []
        other.close()

        grown = resident_bytes(pid) - before
        assert grown < heads * CHUNK / 2, f"the server grew by {grown} bytes for {heads} heads"

        local = tmp_path / "model.pt"
        content, sha256 = model_file(2 * CHUNK + 77)
        local.write_bytes(content)
        Model.register(sdk_ws, str(local), "beside-heads", show_progress=False)
        assert stored(sha256) == content
    finally:
        for connection in held:
            connection.close()
