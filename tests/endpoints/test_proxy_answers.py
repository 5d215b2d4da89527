"""What the scoring proxy passes on of a replica's answer (a replica runs member code): a bounded
body, of a type no browser runs on TrainHub's origin; anything else is refused."""

from __future__ import annotations

import asyncio

import pytest

from endpoints.proxy import MAX_ANSWER_BYTES, MAX_ANSWER_HEADERS, _answer_head


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
