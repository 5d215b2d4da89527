"""A reverse proxy in front of a live server that loses one answer the way a network does.

Every request is passed to the server and its answer back, except the first (or `nth`) one
matching a pattern: that one reaches the server, which processes it and answers, and then the client gets
either nothing (the connection is closed, as when a link drops) or a 504 (as a gateway answers
when the server was slower than its timeout). Either way the client cannot know its request was
stored. Each request seen is recorded (method, path, Idempotency-Key) for the test to look at, and
the connections it was sent on are counted. With `close_idle`, the proxy closes a connection after
each answer without saying so, as a server closes a connection that sat idle too long.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DROP = "drop"
GATEWAY_TIMEOUT = "504"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class LosingProxy:
    def __init__(self, upstream: str, pattern: str, mode: str = DROP, nth: int = 1, close_idle: bool = False):
        self.upstream = urlsplit(upstream)
        self.close_idle = close_idle
        self.connections = 0
        self.pattern = re.compile(pattern)
        self.mode = mode
        self.nth = nth
        self.matched = 0
        self.seen: list[tuple[str, str, str | None]] = []
        self.lost: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _should_lose(self, method: str, path: str) -> bool:
        with self._lock:
            if self.lost or not self.pattern.search(f"{method} {path}"):
                return False
            self.matched += 1
            if self.matched < self.nth:
                return False
            self.lost.append((method, path, 0))
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy.connections += 1

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
                lose = proxy._should_lose(self.command, self.path)
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()  # the server has processed the request and answered
                upstream.close()
                if lose:
                    proxy.lost[-1] = (self.command, self.path, answer.status)
                    if proxy.mode == DROP:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(504, "Gateway Timeout")
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "16")
                    self.end_headers()
                    self.wfile.write(b"Gateway Timeout\n")
                    return
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                if proxy.close_idle:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        return Handler

    def __enter__(self) -> LosingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
