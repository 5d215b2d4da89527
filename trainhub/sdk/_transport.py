"""The SDK's one way to the server: the token, timeouts, one retry policy and typed errors.

Standard library only, so that `Run.get_context()` inside a run needs nothing else. The policy:

- GET, HEAD, PUT and DELETE are idempotent: they are sent again after a connection error, a
  timeout or a 429/500/502/503/504 answer, with backoff (a 429's or 503's Retry-After is honoured).
- A POST is sent again after those only when it carries an `Idempotency-Key` header: the server
  then answers a repeat with its first answer and stores nothing twice. A POST without one is
  sent once: after a timeout nobody knows whether the server stored it.
- A refused connection is tried again for every method: nothing reached the server.

A request that may be sent again goes on a connection this thread keeps to the server (no new
TCP connection and handshake per call); one found closed by the server as it sat idle is
replaced and the request sent again at once. A POST without a key goes on a connection of its own.
"""

from __future__ import annotations

import http.client
import io
import json as jsonlib
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trainhub.sdk import exceptions

USER_AGENT = "trainhub-sdk/0.1"
DEFAULT_TIMEOUT = 60.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPTS = 5
BACKOFF_SECONDS = 0.3
MAX_DELAY_SECONDS = 5.0


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _seconds(timeout: Any) -> float:
    """requests' (connect, read) pairs are still accepted: the socket gets the longer one."""
    return float(max(timeout)) if isinstance(timeout, tuple) else float(timeout)


def _ssl_context() -> ssl.SSLContext | None:
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else None


def _retry_after(headers: Any) -> float | None:
    value = (headers or {}).get("Retry-After", "")
    return min(float(value), 30.0) if value.isdigit() else None


class Response:
    """An answer of the server: status, headers, and the body read whole or streamed."""

    def __init__(self, raw: Any, content: bytes | None = None):
        self.raw = raw
        self.status_code: int = raw.status
        self.headers = raw.headers
        self._content = content

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self.raw.read()
        return self._content

    def json(self) -> Any:
        return jsonlib.loads(self.content or b"null")

    def iter_content(self, chunk_size: int | None = 1 << 20) -> Iterator[bytes]:
        while chunk := self.raw.read(chunk_size or (1 << 20)):
            yield chunk

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class FileRange:
    """A request body that is bytes [offset, offset + length) of an open file: sent by the kernel
    from the page cache to the socket (sendfile) over plain HTTP, without passing through this
    process; read into memory first where TLS or a proxy is in the way. `on_sent` is called once
    the body is in the socket, before the answer (where it is read into memory: as it is sent)."""

    fd: int
    offset: int
    length: int
    on_sent: Callable[[], None] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return self.length

    def read(self) -> memoryview:
        """The bytes, in a buffer this thread uses again for its next request (fresh memory costs a
        page fault per 4 KB, more than the copy itself)."""
        buffer = getattr(_READS, "buffer", None)
        if buffer is None or len(buffer) < self.length:
            buffer = _READS.buffer = bytearray(self.length)
        view = memoryview(buffer)[: self.length]
        got = 0
        while got < self.length:
            count = os.preadv(self.fd, [view[got:]], self.offset + got)
            if count == 0:
                raise exceptions.TrainHubError(FILE_ENDED.format(end=self.offset + self.length))
            got += count
        return view


FILE_ENDED = "The file ended before byte {end}: it changed while it was sent."
_READS = threading.local()


class _Retryable:
    """An attempt that failed in a way worth another: what to raise when none is left, and how
    long the server asked to wait."""

    def __init__(self, error: exceptions.TrainHubError, wait: float | None = None):
        self.error = error
        self.wait = wait


class Transport:
    """HTTP to one TrainHub server with one token."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._context = _ssl_context()
        self._kept = threading.local()  # this thread's connection to the server: (pid, connection)
        # Whether requests go to the server itself (no proxy between), read once, as urllib's opener
        # reads the proxy settings once; and whether a file's bytes can go from the kernel straight
        # to it (plain HTTP too).
        parts = urllib.parse.urlsplit(self.base_url)
        proxies = urllib.request.getproxies()
        direct = parts.scheme not in proxies or bool(urllib.request.proxy_bypass(parts.hostname or ""))
        self._direct = direct and parts.scheme in ("http", "https")
        self._sends_files = direct and parts.scheme == "http"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a workspace handed to another process) without its connections or TLS context."""
        return {key: value for key, value in self.__dict__.items() if key not in ("_kept", "_context")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _context=_ssl_context(), _kept=threading.local())

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: bytes | memoryview | FileRange | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        timeout: Any = None,
        retry_seconds: float | None = None,
    ) -> Response:
        """Send a request, again as the policy allows; `retry_seconds` keeps trying for that
        long instead of a fixed number of attempts (a run's metrics)."""
        method = method.upper()
        url = self.url(path)
        if params:
            query = {key: value for key, value in params.items() if value is not None}
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        sent = {"User-Agent": USER_AGENT, **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        body = data
        if json is not None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            sent["Content-Type"] = "application/json"
        repeatable = method in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in sent
        seconds = _seconds(timeout if timeout is not None else self.timeout)
        deadline = None if retry_seconds is None else time.monotonic() + retry_seconds
        attempt = 0
        while True:
            outcome = self._attempt(method, url, body, sent, stream, seconds, repeatable)
            if isinstance(outcome, Response):
                return outcome
            attempt += 1
            delay = outcome.wait or min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_DELAY_SECONDS)
            out_of_time = attempt >= ATTEMPTS if deadline is None else time.monotonic() + delay > deadline
            if out_of_time:
                raise outcome.error
            time.sleep(delay)

    def _attempt(
        self,
        method: str,
        url: str,
        body: bytes | memoryview | FileRange | None,
        headers: dict[str, str],
        stream: bool,
        seconds: float,
        repeatable: bool,
    ) -> Response | _Retryable:
        """The answer, or a failure worth another attempt; other failures are raised as typed
        errors, outside the except blocks so that they carry no urllib context."""
        retry_after = None
        try:
            if isinstance(body, FileRange) and not stream and self._sends_files:
                return self._send_file(method, url, body, headers, seconds)
            data = body.read() if isinstance(body, FileRange) else body
            if isinstance(body, FileRange) and body.on_sent is not None:
                body.on_sent()
            if repeatable and not stream and self._direct:
                kept = self._send_kept(method, url, data, headers, seconds)
                if kept is not None:
                    return kept
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            raw = urllib.request.urlopen(request, timeout=seconds, context=self._context)
            if stream:
                return Response(raw)
            with raw:
                return Response(raw, raw.read())
        except urllib.error.HTTPError as answer:
            error = exceptions.from_answer(answer.code, answer.read(), answer.reason or "")
            again = repeatable and answer.code in RETRY_STATUSES
            retry_after = _retry_after(answer.headers)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as failure:
            reason = getattr(failure, "reason", failure)
            if isinstance(reason, TimeoutError):
                error = exceptions.ServerUnreachableError(
                    f"The TrainHub server at {self.base_url} did not answer in time."
                )
            else:
                error = exceptions.ServerUnreachableError(
                    f"Cannot reach the TrainHub server at {self.base_url}: is it running, and is "
                    f"the URL right? ({type(reason).__name__})"
                )
            again = repeatable or isinstance(reason, ConnectionRefusedError)
        if again:
            return _Retryable(error, retry_after)
        raise error

    def _send_kept(
        self, method: str, url: str, data: bytes | memoryview | None, headers: dict[str, str], seconds: float
    ) -> Response | None:
        """The request on this thread's kept connection (made on first use): the answer, an error
        status raised as urllib raises it, for `_attempt` to judge; None for a redirect, which
        urllib then follows. Call it only for a request that may be sent again: one that finds its
        kept connection closed by the server is sent again at once, on a new one."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for new in (False, True):
            connection, used = self._connection(parts, seconds, new)
            try:
                connection.request(method, target, body=data, headers=headers)
                raw = connection.getresponse()
                content = raw.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_kept()
                if used and not new:
                    continue  # the server closed it while it sat idle (or lost the answer: sent again)
                raise
            except BaseException:
                self._drop_kept()
                raise
            if raw.will_close:
                self._drop_kept()
            break
        if 300 <= raw.status < 400:
            return None
        if raw.status >= 400:
            raise urllib.error.HTTPError(url, raw.status, raw.reason, raw.headers, io.BytesIO(content))
        return Response(raw, content)

    def _connection(
        self, parts: urllib.parse.SplitResult, seconds: float, new: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection to the server, whether it served a request before). One made
        by another process (this one forked from it) is left to that process."""
        kept = getattr(self._kept, "connection", None)
        if kept is not None and kept[0] == os.getpid() and not new:
            connection = kept[1]
            connection.timeout = seconds
            if connection.sock is not None:
                connection.sock.settimeout(seconds)
            return connection, True
        self._drop_kept()
        if parts.scheme == "https":
            context = self._context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=seconds, context=context)
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=seconds)
        self._kept.connection = (os.getpid(), connection)
        return connection, False

    def _drop_kept(self) -> None:
        kept = getattr(self._kept, "connection", None)
        self._kept.connection = None
        if kept is not None and kept[0] == os.getpid():
            kept[1].close()

    def _send_file(self, method: str, url: str, body: FileRange, headers: dict[str, str], seconds: float) -> Response:
        """One request whose body the kernel sends from the file; an error status is raised as
        urllib raises it, for `_attempt` to judge."""
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=seconds)
        try:
            connection.putrequest(method, parts.path + (f"?{parts.query}" if parts.query else ""))
            for name, value in {**headers, "Content-Length": str(body.length)}.items():
                connection.putheader(name, value)
            connection.endheaders()
            assert connection.sock is not None
            with open(body.fd, "rb", closefd=False) as source:
                sent = connection.sock.sendfile(source, body.offset, body.length) if body.length else 0
            if sent != body.length:
                raise exceptions.TrainHubError(FILE_ENDED.format(end=body.offset + body.length))
            if body.on_sent is not None:
                body.on_sent()
            raw = connection.getresponse()
            content = raw.read()
        finally:
            connection.close()
        if raw.status >= 400:
            raise urllib.error.HTTPError(url, raw.status, raw.reason, raw.headers, io.BytesIO(content))
        return Response(raw, content)

    def exchange(
        self, method: str, url: str, *, data: bytes, headers: dict[str, str], timeout: Any
    ) -> tuple[int, bytes]:
        """One request to a full URL outside the API (an endpoint's scoring URL) with this token:
        its status and body whatever the status, sent once; a connection failure is raised as is."""
        sent = {"User-Agent": USER_AGENT, **headers}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method.upper(), headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=_seconds(timeout), context=self._context) as raw:
                return raw.status, raw.read()
        except urllib.error.HTTPError as answer:
            return answer.code, answer.read()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=json, **kwargs)
        return response.json() if response.content else None

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = self.request("PATCH", path, json=json, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)
