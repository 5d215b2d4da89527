"""What the scoring proxy passes on of a replica's answer (a replica runs member code): a bounded
body, of a type no browser runs on TrainHub's origin; anything else is refused."""

from __future__ import annotations

import asyncio

import pytest

from endpoints.proxy import MAX_ANSWER_BYTES, MAX_ANSWER_HEADERS, Backend, ReplicaLost, ScoringProxy, _answer_head


def head(raw: bytes):
    async def read():
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        status_line = await reader.readline()
        return await _answer_head(status_line, reader)

    return asyncio.run(read())


def test_a_json_answer_passes_as_it_is():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert head(raw) == (200, b"application/json", 2, True)


def test_an_html_answer_is_passed_as_bytes_no_browser_renders():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<b>x"
    assert head(raw) == (200, b"application/octet-stream", 5, False)


@pytest.mark.parametrize(
    "raw",
    [
        f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_ANSWER_BYTES + 1}\r\n\r\n".encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: 1\r\n" * (MAX_ANSWER_HEADERS + 1) + b"\r\n",
        b"HTTP/1.1 999 NO\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_an_unbounded_or_malformed_answer_is_refused(raw):
    with pytest.raises((ValueError, IndexError)):
        head(raw)


def test_an_answer_cut_off_by_the_replicas_death_counts_as_the_replica_lost():
    """Its head came, then the connection closed before the body: a replica killed while answering.
    Lost, as if it had died a moment earlier (the request may go to another replica once), not a
    bad answer passed on as a failure (seen when a test killed a replica under traffic)."""

    async def head_only(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 116\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> ReplicaLost:
        server = await asyncio.start_server(head_only, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ReplicaLost) as lost:
                await ScoringProxy(app=None).forward(
                    Backend(1, "127.0.0.1", port, "secret"), b"application/json", b"{}"
                )
        finally:
            server.close()
        return lost.value

    assert asyncio.run(scenario()).sent is True
