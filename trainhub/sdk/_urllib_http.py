"""The SDK's HTTP client on the standard library alone, for running scripts whose environment
has no `requests` (the curated environments do not): same methods, same typed errors."""

from __future__ import annotations

import json as jsonlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from trainhub.sdk import exceptions

RETRY_STATUSES = (429, 502, 503, 504)
ATTEMPTS = 4


class UrllibResponse:
    def __init__(self, raw: Any):
        self.raw = raw
        self.status_code: int = raw.status
        self.headers = raw.headers
        self._content: bytes | None = None

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

    def __enter__(self) -> UrllibResponse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class UrllibHttpClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        timeout: Any = None,
    ) -> UrllibResponse:
        url = self.url(path)
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        body = data
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent["Content-Type"] = "application/json"
        if body is not None and not isinstance(body, (bytes, bytearray)):
            sent["Content-Length"] = str(len(body))
        seconds = timeout[-1] if isinstance(timeout, tuple) else (timeout or self.timeout)
        # A streamed body cannot be sent twice: only requests with bytes (or none) are retried.
        attempts = ATTEMPTS if body is None or isinstance(body, (bytes, bytearray)) else 1
        for attempt in range(attempts):
            request = urllib.request.Request(url, data=body, method=method, headers=sent)
            try:
                return UrllibResponse(urllib.request.urlopen(request, timeout=seconds))
            except urllib.error.HTTPError as error:
                if error.code in RETRY_STATUSES and attempt + 1 < attempts:
                    time.sleep(0.3 * 2**attempt)
                    continue
                raise exceptions.from_answer(error.code, error.read()) from None
            except (urllib.error.URLError, OSError) as error:
                if attempt + 1 < attempts:
                    time.sleep(0.3 * 2**attempt)
                    continue
                raise exceptions.ServerUnreachableError(
                    f"Cannot reach the TrainHub server at {self.base_url} ({error})."
                ) from None
        raise AssertionError("unreachable")

    def get(self, path: str, **kwargs: Any) -> Any:
        with self.request("GET", path, **kwargs) as response:
            return response.json()

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        with self.request("POST", path, json=json, **kwargs) as response:
            return response.json() if response.content else None

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        with self.request("PATCH", path, json=json, **kwargs) as response:
            return response.json() if response.content else None

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs).close()
