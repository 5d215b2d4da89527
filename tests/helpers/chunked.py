"""A request body sent in HTTP/1.1 chunks with no Content-Length, as a client that never says how
much it sends: for tests that a server stops reading one once it is past its limit."""

from __future__ import annotations

import socket

PIECE = 64 * 1024


def send_chunks(connection: socket.socket, attempted: int) -> int:
    """Sends `attempted` bytes as chunks of PIECE on `connection` (whose request head said
    Transfer-Encoding: chunked) until all went or the server closed the connection; what was sent."""
    frame = f"{PIECE:x}\r\n".encode() + b"z" * PIECE + b"\r\n"
    sent = 0
    try:
        while sent < attempted:
            connection.sendall(frame)
            sent += PIECE
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent
